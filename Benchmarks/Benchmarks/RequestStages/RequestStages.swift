import Benchmark
import CrebitosHTTP
import CrebitosLedger
import CrebitosStore
import Dispatch
import Foundation
import NIOCore
import NIOHTTP1

// One benchmark per stage of a request, each on real parts (a real SQLite file in a
// temporary directory, the real decoder and JSON writer, the real responder), so that a
// regression in any stage shows in its own numbers: wall clock, CPU and mallocs per
// operation. Run: `swift package --package-path Benchmarks benchmark` (README.md).
//
// A sample runs `scalingFactor` operations and the tool divides by it, so every number
// it prints is per operation; scaling also spreads the harness's own few mallocs per
// sample over many operations. CPU time is measured here, with the process CPU clock
// (all threads: the store's writer thread too), because the tool's own CPU metric reads
// /proc in 10 ms scheduler ticks, far coarser than one operation.

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .processCPU, .mallocCountTotal, .throughput],
        warmupIterations: 5,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 10_000
    )
    // Stages that touch the database take tens of microseconds: longer samples. A
    // durable commit takes milliseconds (the fsync): one per sample, so its malloc count
    // includes the harness's own per sample ("harness, no operation" below).
    let storeStage = Benchmark.Configuration(maxDuration: .seconds(3))
    let durableStage = Benchmark.Configuration(scalingFactor: .one, maxDuration: .seconds(3))

    Benchmark("harness, no operation (one per sample)", configuration: durableStage) { benchmark in
        measure(benchmark) { iteration in blackHole(iteration) }
    }

    // MARK: decode: body bytes -> TransactionRequest (JSON scan + the payload's rules)

    let body = Array(#"{"valor": 1000, "tipo": "d", "descricao": "descricao"}"#.utf8)
    Benchmark("decode transaction body") { benchmark in
        measure(benchmark) { _ in blackHole(try? TransactionPayload.decode(body)) }
    }

    // MARK: validate: the TransactionRequest rules alone

    Benchmark("validate transaction request") { benchmark in
        measure(benchmark) { _ in blackHole(try? TransactionRequest(amount: 1000, kind: .debit, description: "descricao")) }
    }

    // MARK: commit: one write through SQLiteLedger (group commit, flock, BEGIN IMMEDIATE)

    for durability in [Durability.normal, .full] {
        let store = TemporaryStore(durability: durability)
        Benchmark(
            "commit one transaction (synchronous=\(durability.rawValue))",
            configuration: durability == .full ? durableStage : storeStage
        ) { benchmark in
            measure(benchmark) { iteration in blackHole(store.commit(credit: iteration.isMultiple(of: 2))) }
        } setup: {
            try store.open()
        } teardown: {
            try store.close()
        }
    }

    // MARK: statement read: the client's balance and last 10 transactions from the file

    let readStore = TemporaryStore(durability: .normal)
    Benchmark("read statement (10 entries)", configuration: storeStage) { benchmark in
        measure(benchmark) { _ in blackHole(readStore.statement()) }
    } setup: {
        try readStore.open(withEntries: AccountStatement.maximumEntries)
    } teardown: {
        try readStore.close()
    }

    // MARK: encode: the response bodies, straight into a ByteBuffer

    let allocator = ByteBufferAllocator()
    let statement = AccountStatement(
        balance: Balance(limit: 100_000, balance: -9_098),
        takenAt: 1_706_000_000_000_000,
        entries: (0..<AccountStatement.maximumEntries).map { index in
            StatementEntry(
                amount: Int64(1_000 + index), kind: index.isMultiple(of: 2) ? .credit : .debit,
                description: "descricao", performedAt: 1_706_000_000_000_000 - Int64(index) * 1_000)
        })
    Benchmark("encode statement JSON (10 entries)") { benchmark in
        measure(benchmark) { _ in blackHole(APIResponder<SQLiteLedger>.statementJSON(statement, allocator: allocator)) }
    }
    Benchmark("encode transaction JSON") { benchmark in
        let balance = Balance(limit: 100_000, balance: -9_098)
        measure(benchmark) { _ in blackHole(APIResponder<SQLiteLedger>.transactionJSON(balance, allocator: allocator)) }
    }

    // MARK: whole request in-process: routing, decoding, the store, the response body

    let requestStore = TemporaryStore(durability: .normal)
    var jsonHeaders = HTTPHeaders()
    jsonHeaders.add(name: "Content-Type", value: "application/json")
    // Credit and debit in turn, so that the balance stays inside the limit.
    let posts = ["c", "d"].map { kind in
        APIRequest(
            method: .POST, uri: "/clientes/1/transacoes", headers: jsonHeaders,
            body: allocator.buffer(string: #"{"valor": 1000, "tipo": "\#(kind)", "descricao": "descricao"}"#))
    }
    Benchmark("request POST /clientes/1/transacoes (synchronous=normal)", configuration: storeStage) { benchmark in
        measure(benchmark) { iteration in blackHole(requestStore.respond(to: posts[iteration & 1])) }
    } setup: {
        try requestStore.open(withEntries: AccountStatement.maximumEntries)
    } teardown: {
        try requestStore.close()
    }

    let getStore = TemporaryStore(durability: .normal)
    let get = APIRequest(method: .GET, uri: "/clientes/1/extrato")
    Benchmark("request GET /clientes/1/extrato (10 entries)", configuration: storeStage) { benchmark in
        measure(benchmark) { _ in blackHole(getStore.respond(to: get)) }
    } setup: {
        try getStore.open(withEntries: AccountStatement.maximumEntries)
    } teardown: {
        try getStore.close()
    }
}

extension BenchmarkMetric {
    /// CPU time of the whole process (every thread), in nanoseconds per operation.
    static var processCPU: BenchmarkMetric { .custom("CPU, process (ns)", polarity: .prefersSmaller, useScalingFactor: true) }
}

/// Runs one sample (`scalingFactor` operations) and records its process CPU time.
@inline(__always)
func measure(_ benchmark: Benchmark, _ operation: (Int) -> Void) {
    let start = processCPUNanoseconds()
    for iteration in benchmark.scaledIterations { operation(iteration) }
    benchmark.measurement(.processCPU, processCPUNanoseconds() - start)
}

func processCPUNanoseconds() -> Int {
    var time = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
    return time.tv_sec * 1_000_000_000 + time.tv_nsec
}

/// A SQLiteLedger on a fresh file in its own temporary directory, opened by a benchmark's
/// setup and removed by its teardown. Waits for the ledger's completions with a
/// semaphore: no task, no executor hop. The wait costs one allocation per operation
/// (the box that carries the answer) besides the completion closure the server has too.
final class TemporaryStore: @unchecked Sendable {
    let durability: Durability
    private var directory: URL?
    private var ledger: SQLiteLedger?
    private var responder: APIResponder<SQLiteLedger>?
    /// One per store: a benchmark runs one operation at a time.
    private let answered = DispatchSemaphore(value: 0)

    init(durability: Durability) {
        self.durability = durability
    }

    func open(withEntries entries: Int = 0) throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("crebitos-benchmark-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        self.directory = directory
        let ledger = try SQLiteLedger.open(StoreConfiguration(
            path: directory.appendingPathComponent("rinha.db").path, durability: durability))
        self.ledger = ledger
        responder = APIResponder(ledger: ledger, instanceName: "benchmark")
        for index in 0..<entries {
            guard case .success = commit(credit: index.isMultiple(of: 2)) else {
                throw BenchmarkSetupError(message: "could not write the setup's transactions")
            }
        }
    }

    func close() throws {
        try ledger?.close()
        ledger = nil
        responder = nil
        if let directory { try FileManager.default.removeItem(at: directory) }
        directory = nil
    }

    /// One transaction of 1 cent on client 1, committed (durably, for `full`) on return.
    func commit(credit: Bool) -> Result<TransactionReceipt, any Error> {
        let request = try! TransactionRequest(amount: 1, kind: credit ? .credit : .debit, description: "benchmark")
        return wait { done in ledger!.apply(request, toClient: 1, idempotencyKey: nil, completion: done) }
    }

    func statement() -> Result<AccountStatement?, any Error> {
        wait { done in ledger!.statement(forClient: 1, completion: done) }
    }

    func respond(to request: APIRequest) -> APIResponse {
        wait { done in responder!.respond(to: request, done) }
    }

    private func wait<Value>(_ start: (@escaping @Sendable (Value) -> Void) -> Void) -> Value {
        let answered = answered
        let box = Box<Value>()
        start { value in
            box.value = value
            answered.signal()
        }
        answered.wait()
        return box.value!
    }
}

/// Carries a completion's value to the waiting thread; the semaphore orders the accesses.
private final class Box<Value>: @unchecked Sendable {
    var value: Value?
}

struct BenchmarkSetupError: Error {
    let message: String
}
