-- Keys of every algorithm: each has its own rotation sequence, so a slot is
-- (alg, generation); the public members are those of the key's type (RSA: n, e;
-- EC: crv, x, y; OKP: crv, x). Every key stored before this was RS256.
-- SQLite cannot change a primary key in place: copy into the new shape.
CREATE TABLE signing_keys_new (
    alg          TEXT   NOT NULL,             -- RS256, PS256, ES256 or EdDSA
    generation   BIGINT NOT NULL,
    kid          TEXT   NOT NULL UNIQUE,
    published_at BIGINT NOT NULL,             -- Unix seconds
    activates_at BIGINT NOT NULL,
    retires_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    n            TEXT,                        -- RSA: modulus, base64url
    e            TEXT,                        -- RSA: exponent, base64url
    crv          TEXT,                        -- EC, OKP: curve (P-256, Ed25519)
    x            TEXT,                        -- EC, OKP: x coordinate / public key, base64url
    y            TEXT,                        -- EC: y coordinate, base64url
    kek_id       TEXT   NOT NULL,             -- which key-encryption key sealed it
    nonce        BLOB   NOT NULL,
    sealed_key   BLOB   NOT NULL,             -- PKCS#8 DER, sealed, kid as AAD
    PRIMARY KEY (alg, generation)             -- one key per rotation slot per algorithm
);
INSERT INTO signing_keys_new (alg, generation, kid, published_at, activates_at, retires_at,
                              expires_at, n, e, kek_id, nonce, sealed_key)
    SELECT 'RS256', generation, kid, published_at, activates_at, retires_at,
           expires_at, n, e, kek_id, nonce, sealed_key
    FROM signing_keys;
DROP TABLE signing_keys;
ALTER TABLE signing_keys_new RENAME TO signing_keys;
