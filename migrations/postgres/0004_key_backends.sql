-- Keys may be held in a PKCS#11 token (issue 15): such a row keeps the public
-- half, the schedule and the token's identity, and no private material, so
-- the sealing columns become optional. Every key stored before this is a
-- software key, sealed in its row.
ALTER TABLE signing_keys ADD COLUMN backend TEXT NOT NULL DEFAULT 'software';
ALTER TABLE signing_keys ADD COLUMN token TEXT;
ALTER TABLE signing_keys ALTER COLUMN kek_id DROP NOT NULL;
ALTER TABLE signing_keys ALTER COLUMN nonce DROP NOT NULL;
ALTER TABLE signing_keys ALTER COLUMN sealed_key DROP NOT NULL;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_backend CHECK (
    (backend = 'software' AND kek_id IS NOT NULL AND nonce IS NOT NULL
     AND sealed_key IS NOT NULL AND token IS NULL)
 OR (backend = 'pkcs11' AND kek_id IS NULL AND nonce IS NULL
     AND sealed_key IS NULL AND token IS NOT NULL));
