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

    /// The name of the write procedure. Versioned: a change to its body or signature gets a
    /// new name, created beside the old one, so instances of the previous version keep
    /// calling theirs while a rolling restart replaces them, and a start never has to
    /// `CREATE OR REPLACE` a procedure other hosts are running.
    static let writeProcedure = "crebitos_write_v1"

    /// SQLSTATE of every error the write procedure raises before its COMMIT: whatever went
    /// wrong (a lock_timeout, a statement_timeout, a deadlock, a constraint, a transaction
    /// not READ COMMITTED), the transaction was rolled back. The original SQLSTATE is in the
    /// error's detail. An error with any other SQLSTATE came from the COMMIT itself or after
    /// it (see ``PostgresLedger/rolledBack(sqlState:)``).
    static let rolledBackBeforeCommit = "CR000"

    /// Every write, in all its variants, as one procedure: one `CALL` is one round trip, and
    /// the client's row lock lasts from the `UPDATE` to the end of the WAL flush of the
    /// procedure's own COMMIT.
    ///
    /// A procedure rather than a function, because its COMMIT runs before its result is
    /// sent. A function called in an implicit transaction is committed at the extended
    /// protocol's Sync, after its row and CommandComplete were produced; postgres-nio ends a
    /// query at CommandComplete, so an error at that commit (a deferred constraint; a
    /// backend terminated between the Execute and the Sync) would arrive after a result
    /// that said "applied". Here the row is only sent once COMMIT returned.
    ///
    /// - The body runs in an inner block whose handler turns any error (including
    ///   `query_canceled`, the statement_timeout) into ``rolledBackBeforeCommit``: once the
    ///   COMMIT below has run, a statement_timeout can still interrupt what is left of the
    ///   call, and 57014 alone could not tell whether the write was committed.
    /// - The key path locks the client's row first (`FOR UPDATE`): a second request with
    ///   the same key, from any host, waits there until the first committed, and its next
    ///   statement (READ COMMITTED: a new snapshot per statement of a volatile procedure)
    ///   finds the record. Hence the check that the transaction is READ COMMITTED.
    /// - Nothing written (a refusal without a key, a replay, a reused key, an unknown
    ///   client): ROLLBACK, so no commit record is flushed for a row lock alone.
    ///
    /// `p_delta` is the signed change of the balance, `p_ceiling` the highest balance a
    /// credit may reach; `p_key` NULL means no Idempotency-Key. The outcome's names are
    /// ``IdempotencyRecord``'s, plus `idempotency_key_reused`.
    static let writeProcedureStatement = """
        CREATE OR REPLACE PROCEDURE \(writeProcedure)(
            p_cliente bigint, p_delta bigint, p_valor bigint, p_tipo text, p_descricao text,
            p_now bigint, p_ceiling bigint, p_key text, p_request text,
            INOUT o_outcome text DEFAULT NULL, INOUT o_limite bigint DEFAULT NULL,
            INOUT o_saldo bigint DEFAULT NULL, INOUT o_replayed boolean DEFAULT false)
        LANGUAGE plpgsql AS $procedure$
        DECLARE
            wrote boolean := false;
            recorded_request text;
        BEGIN
            BEGIN
                IF current_setting('transaction_isolation') <> 'read committed' THEN
                    RAISE EXCEPTION 'crebitos writes need READ COMMITTED, this transaction is %',
                        current_setting('transaction_isolation');
                END IF;
                IF p_key IS NOT NULL THEN
                    PERFORM 1 FROM clientes WHERE id = p_cliente FOR UPDATE;
                    IF NOT FOUND THEN
                        -- A request for a client that does not exist stores nothing, not even its key.
                        o_outcome := 'unknown_client';
                    ELSE
                        SELECT request, outcome, limite, saldo INTO recorded_request, o_outcome, o_limite, o_saldo
                        FROM idempotency_keys WHERE cliente_id = p_cliente AND key = p_key;
                        IF FOUND THEN
                            IF recorded_request = p_request THEN
                                o_replayed := true;
                            ELSE
                                o_outcome := 'idempotency_key_reused';
                                o_limite := NULL;
                                o_saldo := NULL;
                            END IF;
                        END IF;
                    END IF;
                END IF;
                IF o_outcome IS NULL THEN
                    -- The limit (or the ceiling) checked and the balance moved by one statement
                    -- under the row lock, the transaction row inserted by the same statement.
                    WITH u AS (
                        UPDATE clientes SET saldo = saldo + p_delta, ultima_em = GREATEST(p_now, ultima_em + 1)
                        WHERE id = p_cliente AND saldo + p_delta >= -limite AND saldo + p_delta <= p_ceiling
                        RETURNING limite, saldo, ultima_em
                    ), t AS (
                        INSERT INTO transacoes (cliente_id, valor, tipo, descricao, realizada_em)
                        SELECT p_cliente, p_valor, p_tipo, p_descricao, ultima_em FROM u
                    )
                    SELECT limite, saldo INTO o_limite, o_saldo FROM u;
                    IF FOUND THEN
                        o_outcome := 'applied';
                        wrote := true;
                    ELSE
                        SELECT limite, saldo INTO o_limite, o_saldo FROM clientes WHERE id = p_cliente;
                        IF NOT FOUND THEN
                            o_outcome := 'unknown_client';
                        ELSIF p_tipo = 'd' THEN
                            o_outcome := 'insufficient_limit';
                        ELSE
                            o_outcome := 'balance_ceiling';
                        END IF;
                    END IF;
                    IF p_key IS NOT NULL AND o_outcome <> 'unknown_client' THEN
                        INSERT INTO idempotency_keys (cliente_id, key, request, outcome, limite, saldo, created_at)
                        VALUES (p_cliente, p_key, p_request, o_outcome, o_limite, o_saldo, p_now);
                        wrote := true;
                    END IF;
                END IF;
            EXCEPTION WHEN OTHERS OR query_canceled THEN
                RAISE EXCEPTION USING ERRCODE = '\(rolledBackBeforeCommit)', MESSAGE = SQLERRM,
                    DETAIL = 'rolled back before commit; SQLSTATE ' || SQLSTATE;
            END;
            IF wrote THEN
                COMMIT;
            ELSE
                ROLLBACK;
            END IF;
        END
        $procedure$
        """

    /// True when every table, index and the write procedure exist (a catalog read) and every
    /// initial client is there (an index probe of `clientes`): two reads, no table lock.
    static func isComplete(_ connection: PostgresConnection, logger: Logger) async throws -> Bool {
        let relations = (tables.map(\.name) + indexes.map(\.name)).map { "to_regclass('\($0)') IS NOT NULL" }
            + ["to_regproc('\(writeProcedure)') IS NOT NULL"]
        let found = try await connection.query(
            PostgresQuery(unsafeSQL: "SELECT \(relations.joined(separator: " AND "))"), logger: logger).collect()
        guard try found.first?.decode(Bool.self) == true else { return false }
        let ids = InitialClients.all.map { String($0.id) }.joined(separator: ", ")
        let clients = try await connection.query(
            PostgresQuery(unsafeSQL: "SELECT count(*) FROM clientes WHERE id IN (\(ids))"), logger: logger).collect()
        return try clients.first?.decode(Int64.self) == Int64(InitialClients.all.count)
    }

    /// Does nothing when everything exists (one read, no table lock: the usual start, on a
    /// live database). Otherwise creates what is missing (tables, indexes, the write
    /// procedure) and seeds the five clients, in one
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
            // CREATE PROCEDURE locks no table; only when missing, so a procedure other hosts
            // are running is never replaced under them.
            let procedure = try await connection.query(
                "SELECT to_regproc(\(writeProcedure)) IS NOT NULL", logger: logger).collect()
            if try procedure.first?.decode(Bool.self) != true {
                try await connection.query(PostgresQuery(unsafeSQL: writeProcedureStatement), logger: logger)
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
