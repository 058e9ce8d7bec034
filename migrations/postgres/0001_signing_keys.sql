-- Signing keys: public half in the clear, private half sealed (AES-256-GCM).
CREATE TABLE signing_keys (
    generation   BIGINT NOT NULL PRIMARY KEY, -- one key per rotation slot
    kid          TEXT   NOT NULL UNIQUE,
    published_at BIGINT NOT NULL,             -- Unix seconds
    activates_at BIGINT NOT NULL,
    retires_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    n            TEXT   NOT NULL,             -- public modulus, base64url
    e            TEXT   NOT NULL,             -- public exponent, base64url
    kek_id       TEXT   NOT NULL,             -- which key-encryption key sealed it
    nonce        BYTEA  NOT NULL,
    sealed_key   BYTEA  NOT NULL              -- PKCS#8 DER, sealed, kid as AAD
);

-- Rotations serialise on a transaction-scoped advisory lock instead of a row.
