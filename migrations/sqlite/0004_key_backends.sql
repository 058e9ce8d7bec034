-- Keys may be held in a PKCS#11 token (issue 15): such a row keeps the public
-- half, the schedule and the token's identity, and no private material, so
-- the sealing columns become optional. Every key stored before this is a
-- software key, sealed in its row.
-- SQLite cannot drop NOT NULL in place: copy into the new shape.
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
    kek_id       TEXT,                        -- software: which key-encryption key sealed it
    nonce        BLOB,                        -- software
    sealed_key   BLOB,                        -- software: PKCS#8 DER, sealed, kid as AAD
    backend      TEXT   NOT NULL DEFAULT 'software', -- 'software' or 'pkcs11'
    token        TEXT,                        -- pkcs11: the token's "label (serial)"
    PRIMARY KEY (alg, generation),            -- one key per rotation slot per algorithm
    CHECK ((backend = 'software' AND kek_id IS NOT NULL AND nonce IS NOT NULL
            AND sealed_key IS NOT NULL AND token IS NULL)
        OR (backend = 'pkcs11' AND kek_id IS NULL AND nonce IS NULL
            AND sealed_key IS NULL AND token IS NOT NULL))
);
INSERT INTO signing_keys_new (alg, generation, kid, published_at, activates_at, retires_at,
                              expires_at, n, e, crv, x, y, kek_id, nonce, sealed_key)
    SELECT alg, generation, kid, published_at, activates_at, retires_at,
           expires_at, n, e, crv, x, y, kek_id, nonce, sealed_key
    FROM signing_keys;
DROP TABLE signing_keys;
ALTER TABLE signing_keys_new RENAME TO signing_keys;
