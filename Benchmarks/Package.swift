// swift-tools-version:6.1
import PackageDescription

// The benchmarks, a package of their own so that the server binary and the root
// package's build (CI's) carry none of the benchmark tooling. Commands: the root README.md.
let package = Package(
    name: "crebitos-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        // Named, because a path dependency is otherwise known by its folder's name, which
        // is whatever the clone is called.
        .package(name: "crebitos", path: ".."),
        // ordo-one/benchmark (formerly package-benchmark, the name its plugin now warns
        // about). The malloc interposer gives the mallocs-per-operation counts.
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // One benchmark per stage of a request: `swift package --package-path Benchmarks benchmark`.
        .executableTarget(
            name: "RequestStages",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "CrebitosLedger", package: "crebitos"),
                .product(name: "CrebitosStore", package: "crebitos"),
                .product(name: "CrebitosHTTP", package: "crebitos"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Benchmarks/RequestStages",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // The write path alone, one process's share: scripts/loadtest writes starts two at
        // once on one file (group commit against the busy-timeout baseline).
        .executableTarget(
            name: "bench-writes",
            dependencies: [
                .product(name: "CrebitosLedger", package: "crebitos"),
                .product(name: "CrebitosStore", package: "crebitos"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/BenchWrites"
        ),
    ]
)
