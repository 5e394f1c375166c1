import CrebitosApp
import CrebitosHTTP
import CrebitosPostgres
import XCTest

final class ServerSettingsTests: XCTestCase {
    func testDefaults() throws {
        let settings = try ServerSettings.resolve(flags: [:], environment: [:])
        XCTAssertEqual(settings.databasePath, "data/rinha.db")
        XCTAssertEqual(settings.listen, .tcp(host: "127.0.0.1", port: 8080))
        XCTAssertEqual(settings.durability, .full)
        XCTAssertEqual(settings.eventLoops, 1)
        XCTAssertEqual(settings.drainPeriod, .seconds(1))
        XCTAssertNil(settings.checkpointInterval)
        XCTAssertTrue(settings.metricsEnabled)
    }

    func testAFlagWinsOverTheEnvironment() throws {
        let settings = try ServerSettings.resolve(
            flags: [.eventLoops: "2", .listen: "unix:/tmp/a.sock"],
            environment: ["CREBITOS_EVENT_LOOPS": "3", "CREBITOS_SYNCHRONOUS": "NORMAL", "CREBITOS_CHECKPOINT_MS": "500"])
        XCTAssertEqual(settings.eventLoops, 2)
        XCTAssertEqual(settings.listen, .unixSocket(path: "/tmp/a.sock"))
        XCTAssertEqual(settings.durability, .normal)
        XCTAssertEqual(settings.checkpointInterval, .milliseconds(500))
    }

    /// A bad value is refused with a message naming where it came from, never replaced
    /// by a default.
    func testBadValuesAreRefusedByName() {
        let cases: [([Setting: String], [String: String], String)] = [
            ([:], ["CREBITOS_EVENT_LOOPS": "abc"], "CREBITOS_EVENT_LOOPS='abc'"),
            ([.eventLoops: "0"], [:], "--event-loops '0'"),
            ([:], ["CREBITOS_SYNCHRONOUS": "off"], "CREBITOS_SYNCHRONOUS='off'"),
            ([:], ["CREBITOS_LISTEN": "8080"], "CREBITOS_LISTEN='8080'"),
            ([:], ["CREBITOS_DRAIN_MS": "-1"], "CREBITOS_DRAIN_MS='-1'"),
            ([:], ["CREBITOS_LOG_LEVEL": "verbose"], "CREBITOS_LOG_LEVEL='verbose'"),
            ([:], ["CREBITOS_METRICS": "yes"], "CREBITOS_METRICS='yes'"),
            ([.instance: "api 01"], [:], "--instance 'api 01'"),
            ([:], ["CREBITOS_DATABASE": "postgres://u@h:99999/db"], "CREBITOS_DATABASE='postgres://u@h:99999/db': is not a usable PostgreSQL URL: the port"),
            ([.database: "postgresql://u@/db"], [:], "--database 'postgresql://u@/db': is not a usable PostgreSQL URL: the host is missing"),
            ([:], ["CREBITOS_DATABASE": "postgres://h/db?sslmode=required"], "CREBITOS_DATABASE='postgres://h/db?sslmode=required': is not a usable PostgreSQL URL: sslmode must be one of"),
            ([:], ["CREBITOS_POSTGRES_CONNECTIONS": "0"], "CREBITOS_POSTGRES_CONNECTIONS='0'"),
            ([:], ["CREBITOS_POSTGRES_LOCK_TIMEOUT_MS": "0"], "CREBITOS_POSTGRES_LOCK_TIMEOUT_MS='0'"),
            ([.postgresRequestsInFlight: "many"], [:], "--postgres-requests-in-flight 'many'"),
        ]
        for (flags, environment, named) in cases {
            XCTAssertThrowsError(try ServerSettings.resolve(flags: flags, environment: environment)) { error in
                XCTAssertTrue("\(error)".hasPrefix(named), "\(error)")
            }
        }
    }

    func testThePostgreSQLDefaultsAreTheStoresOwn() {
        // Written out in ServerSettings so that a binary without the PostgreSQL store has them too.
        XCTAssertEqual(Setting.postgresConnections.defaultValue, "\(PostgresStoreConfiguration.defaultMaximumConnections)")
        XCTAssertEqual(ServerSettings().postgresConnections, PostgresStoreConfiguration.defaultMaximumConnections)
        XCTAssertEqual(ServerSettings().postgresLockTimeout, PostgresStoreConfiguration.defaultLockTimeout)
        XCTAssertEqual(ServerSettings().postgresRequestsInFlight, PostgresStoreConfiguration.defaultMaximumRequestsInFlight)
    }

    func testADatabaseURLChoosesPostgreSQLAndAPathSQLite() throws {
        let postgres = try ServerSettings.resolve(
            flags: [:], environment: ["CREBITOS_DATABASE": "postgres://rinha:s%40cret@127.0.0.1:5433/rinha", "CREBITOS_POSTGRES_CONNECTIONS": "4"])
        guard case .postgres(let url) = postgres.database else { return XCTFail("\(postgres.database)") }
        XCTAssertEqual(url.endpoint, .tcp(host: "127.0.0.1", port: 5433))
        XCTAssertEqual(url.user, "rinha")
        XCTAssertEqual(url.password, "s@cret")
        XCTAssertEqual(url.database, "rinha")
        XCTAssertEqual(postgres.databasePath, "postgres://rinha:***@127.0.0.1:5433/rinha", "the password never reaches a log")
        XCTAssertEqual(postgres.postgresConnections, 4)
        let socket = try ServerSettings.resolve(flags: [.database: "postgresql://app@/ledger?host=/run/postgresql"], environment: [:])
        guard case .postgres(let socketURL) = socket.database else { return XCTFail("\(socket.database)") }
        XCTAssertEqual(socketURL.endpoint, .unixSocket(directory: "/run/postgresql", port: 5432))
        XCTAssertEqual(socketURL.database, "ledger")
        let defaults = try ServerSettings.resolve(flags: [.database: "postgres://db.internal"], environment: [:])
        guard case .postgres(let defaultsURL) = defaults.database else { return XCTFail("\(defaults.database)") }
        XCTAssertEqual(defaultsURL.endpoint, .tcp(host: "db.internal", port: 5432))
        XCTAssertEqual(defaultsURL.user, "postgres")
        XCTAssertEqual(defaultsURL.database, "postgres")
        let sqlite = try ServerSettings.resolve(flags: [.database: "/var/lib/postgres-backup.db"], environment: [:])
        XCTAssertEqual(sqlite.database, .sqlite(path: "/var/lib/postgres-backup.db"))
    }

    /// The PostgreSQL store's lock_timeout and in-flight bound were constants of the store's
    /// configuration; an operator can now set them, and the defaults are the store's own.
    func testThePostgresLockTimeoutAndInFlightBoundAreSettings() throws {
        let defaults = try ServerSettings.resolve(flags: [:], environment: [:])
        XCTAssertEqual(defaults.postgresLockTimeout, PostgresStoreConfiguration.defaultLockTimeout)
        XCTAssertEqual(defaults.postgresRequestsInFlight, PostgresStoreConfiguration.defaultMaximumRequestsInFlight)
        let set = try ServerSettings.resolve(
            flags: [.postgresRequestsInFlight: "64"],
            environment: ["CREBITOS_POSTGRES_LOCK_TIMEOUT_MS": "250", "CREBITOS_POSTGRES_REQUESTS_IN_FLIGHT": "9"])
        XCTAssertEqual(set.postgresLockTimeout, .milliseconds(250))
        XCTAssertEqual(set.postgresRequestsInFlight, 64)
    }

    func testHelpShowsTheRealDefaultAndVariable() {
        XCTAssertEqual(Setting.eventLoops.flag, "--event-loops")
        XCTAssertEqual(Setting.eventLoops.environmentVariable, "CREBITOS_EVENT_LOOPS")
        XCTAssertTrue(Setting.drainMs.help.hasSuffix("Default: 1000. Env: CREBITOS_DRAIN_MS."), Setting.drainMs.help)
    }
}
