import CrebitosLedger
import Logging
import PostgresNIO

/// The schema on PostgreSQL: the same tables, columns and constraints as the SQLite file
/// (CrebitosStore's Schema), in PostgreSQL's types, plus `clientes.ultima_em` (the last
/// `realizada_em` given to the client, see ``PostgresLedger``).
enum PostgresSchema {
    /// The key of the advisory lock that start-up takes: any constant works, as long as
    /// every instance uses the same one (it spells "crebitos" in ASCII, cut to 63 bits).
    static let startupLockKey: Int64 = 0x6372_6562_6974_6F73

    /// The tables, in the order they must be created, each with its statement.
    static let tables: [(name: String, statement: String)] = [
        // The CHECK constraints restate the invariants of docs/API.md, as in the SQLite file.
        ("clientes", """
        CREATE TABLE IF NOT EXISTS clientes (
            id        bigint PRIMARY KEY,
            limite    bigint NOT NULL CHECK (limite >= 0),
            saldo     bigint NOT NULL DEFAULT 0,
            ultima_em bigint NOT NULL DEFAULT 0, -- the newest realizada_em of the client
            CHECK (saldo >= -limite)
        )
        """),
        ("transacoes", """
        CREATE TABLE IF NOT EXISTS transacoes (
            id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            cliente_id   bigint NOT NULL REFERENCES clientes(id),
            valor        bigint NOT NULL CHECK (valor > 0),
            tipo         text   NOT NULL CHECK (tipo IN ('c', 'd')),
            descricao    text   NOT NULL CHECK (char_length(descricao) BETWEEN 1 AND 10),
            realizada_em bigint NOT NULL -- microseconds since the Unix epoch, UTC
        )
        """),
        ("idempotency_keys", """
        CREATE TABLE IF NOT EXISTS idempotency_keys (
            cliente_id bigint NOT NULL REFERENCES clientes(id),
            key        text   NOT NULL,
            request    text   NOT NULL, -- the request it answered, to detect reuse
            outcome    text   NOT NULL, -- applied | insufficient_limit | balance_ceiling
            limite     bigint,
            saldo      bigint,
            created_at bigint NOT NULL, -- microseconds since the Unix epoch, UTC
            PRIMARY KEY (cliente_id, key)
        )
        """),
    ]

    /// The indexes, created only when `to_regclass` does not find them: `CREATE INDEX IF
    /// NOT EXISTS` takes a ShareLock on its table before it looks, so on a live database
    /// it waits for every open write transaction and queues every later write behind it.
    static let indexes: [(name: String, statement: String)] = [
        // A statement walks this index backwards from the client's newest entry.
        ("transacoes_por_cliente", "CREATE INDEX transacoes_por_cliente ON transacoes (cliente_id, id)"),
        ("idempotency_keys_por_idade", "CREATE INDEX idempotency_keys_por_idade ON idempotency_keys (created_at)"),
    ]

    /// True when every table and index exists (a catalog read) and every initial client
    /// is there (an index probe of `clientes`): two reads, no table lock.
    static func isComplete(_ connection: PostgresConnection, logger: Logger) async throws -> Bool {
        let relations = (tables.map(\.name) + indexes.map(\.name)).map { "to_regclass('\($0)') IS NOT NULL" }
        let found = try await connection.query(
            PostgresQuery(unsafeSQL: "SELECT \(relations.joined(separator: " AND "))"), logger: logger).collect()
        guard try found.first?.decode(Bool.self) == true else { return false }
        let ids = InitialClients.all.map { String($0.id) }.joined(separator: ", ")
        let clients = try await connection.query(
            PostgresQuery(unsafeSQL: "SELECT count(*) FROM clientes WHERE id IN (\(ids))"), logger: logger).collect()
        return try clients.first?.decode(Int64.self) == Int64(InitialClients.all.count)
    }

    /// Does nothing when everything exists (one read, no table lock: the usual start, on a
    /// live database). Otherwise creates what is missing and seeds the five clients, in one
    /// transaction under a transaction-level advisory lock: instances starting at the same
    /// moment on an empty database take turns (CREATE TABLE IF NOT EXISTS is not safe
    /// against a concurrent CREATE of the same table), the first creates everything, the
    /// others find it done. Existing clients are left as they are (ON CONFLICT DO NOTHING).
    static func prepare(_ connection: PostgresConnection, logger: Logger) async throws {
        if try await isComplete(connection, logger: logger) { return }
        try await connection.query("BEGIN ISOLATION LEVEL READ COMMITTED", logger: logger)
        do {
            try await connection.query("SELECT pg_advisory_xact_lock(\(startupLockKey))", logger: logger)
            for table in tables {
                try await connection.query(PostgresQuery(unsafeSQL: table.statement), logger: logger)
            }
            for index in indexes {
                let found = try await connection.query("SELECT to_regclass(\(index.name)) IS NOT NULL", logger: logger).collect()
                if try found.first?.decode(Bool.self) == true { continue }
                try await connection.query(PostgresQuery(unsafeSQL: index.statement), logger: logger)
            }
            for client in InitialClients.all {
                try await connection.query(
                    "INSERT INTO clientes (id, limite, saldo) VALUES (\(client.id), \(client.limit), 0) ON CONFLICT (id) DO NOTHING",
                    logger: logger)
            }
            try await connection.query("COMMIT", logger: logger)
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }
}
