import CoreMetrics

/// What the write path records for `GET /metrics`: how many writes each commit carried,
/// how long the writer waited for the cross-process lock, and how many writes were
/// waiting when a batch was taken. Created once per ledger from the configured factory.
struct StoreMetrics: Sendable {
    let batchSize: Recorder
    let lockWait: Timer
    let queueDepth: Gauge

    init?(factory: (any MetricsFactory)?) {
        guard let factory else { return nil }
        batchSize = Recorder(label: "crebitos_commit_batch_size", factory: factory)
        lockWait = Timer(label: "crebitos_lock_wait_seconds", factory: factory)
        queueDepth = Gauge(label: "crebitos_write_queue_depth", factory: factory)
    }
}
