-- Revoked access tokens (RFC 7009), by `jti`, kept until the token's own
-- `exp`: after that no verifier accepts the token anyway, so the row is pruned.
CREATE TABLE revoked_tokens (
    jti        TEXT   NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL              -- Unix seconds, the token's `exp`
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);
