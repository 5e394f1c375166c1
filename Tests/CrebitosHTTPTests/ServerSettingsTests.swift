import CrebitosApp
import CrebitosHTTP
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
        ]
        for (flags, environment, named) in cases {
            XCTAssertThrowsError(try ServerSettings.resolve(flags: flags, environment: environment)) { error in
                XCTAssertTrue("\(error)".hasPrefix(named), "\(error)")
            }
        }
    }

    func testHelpShowsTheRealDefaultAndVariable() {
        XCTAssertEqual(Setting.eventLoops.flag, "--event-loops")
        XCTAssertEqual(Setting.eventLoops.environmentVariable, "CREBITOS_EVENT_LOOPS")
        XCTAssertTrue(Setting.drainMs.help.hasSuffix("Default: 1000. Env: CREBITOS_DRAIN_MS."), Setting.drainMs.help)
    }
}
