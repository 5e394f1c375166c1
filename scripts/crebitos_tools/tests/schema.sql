CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
CREATE TABLE clientes (
    id     INTEGER PRIMARY KEY,
    limite INTEGER NOT NULL CHECK (limite >= 0),
    saldo  INTEGER NOT NULL DEFAULT 0 CHECK (saldo >= -limite)
) STRICT;
CREATE TABLE transacoes (
    id           INTEGER PRIMARY KEY,
    cliente_id   INTEGER NOT NULL REFERENCES clientes(id),
    valor        INTEGER NOT NULL CHECK (valor > 0),
    tipo         TEXT    NOT NULL CHECK (tipo IN ('c', 'd')),
    descricao    TEXT    NOT NULL CHECK (length(descricao) BETWEEN 1 AND 10),
    realizada_em INTEGER NOT NULL -- microseconds since the Unix epoch, UTC
) STRICT;
CREATE INDEX transacoes_por_cliente ON transacoes (cliente_id, id);
CREATE TABLE IF NOT EXISTS "idempotency_keys" (
    cliente_id   INTEGER NOT NULL REFERENCES clientes(id),
    key          TEXT    NOT NULL,
    request      TEXT    NOT NULL, -- the request it answered, to detect reuse
    outcome      TEXT    NOT NULL, -- applied | insufficient_limit | balance_ceiling
    limite       INTEGER,
    saldo        INTEGER,
    created_at   INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
    PRIMARY KEY (cliente_id, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX idempotency_keys_por_idade ON idempotency_keys (created_at);
