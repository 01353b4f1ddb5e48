-- API keys managed by `tollgate keys`. Only the SHA-256 of a key is stored; the key itself
-- is shown once when it is created. Shipped migrations are never edited.
CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY,
    prefix        TEXT    NOT NULL UNIQUE,       -- first 11 characters of the key, e.g. tg-AbCd1234
    sha256        TEXT    NOT NULL UNIQUE,       -- lower-case hex SHA-256 of the whole key
    department    TEXT    NOT NULL,
    label         TEXT,
    created_ms    INTEGER NOT NULL,              -- Unix time, milliseconds
    last_used_ms  INTEGER,
    expires_ms    INTEGER,                       -- NULL: never expires
    revoked_ms    INTEGER                        -- NULL: not revoked
) STRICT;

CREATE INDEX api_keys_department ON api_keys (department);
