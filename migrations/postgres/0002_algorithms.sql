-- Keys of every algorithm: each has its own rotation sequence, so a slot is
-- (alg, generation); the public members are those of the key's type (RSA: n, e;
-- EC: crv, x, y; OKP: crv, x). Every key stored before this was RS256.
ALTER TABLE signing_keys ADD COLUMN alg TEXT NOT NULL DEFAULT 'RS256';
ALTER TABLE signing_keys ALTER COLUMN alg DROP DEFAULT;
ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_pkey;
ALTER TABLE signing_keys ADD PRIMARY KEY (alg, generation);
ALTER TABLE signing_keys ALTER COLUMN n DROP NOT NULL;
ALTER TABLE signing_keys ALTER COLUMN e DROP NOT NULL;
ALTER TABLE signing_keys ADD COLUMN crv TEXT;
ALTER TABLE signing_keys ADD COLUMN x TEXT;
ALTER TABLE signing_keys ADD COLUMN y TEXT;
