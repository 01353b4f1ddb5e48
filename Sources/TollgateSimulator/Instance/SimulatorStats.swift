/// Counters of one simulated instance since it started or since the last `SimulatedInstance.resetStats()`.
public struct SimulatorStats: Sendable, Equatable {
    /// Every HTTP request received (counted when its head arrives), on every path, answered or not.
    public var requests: Int
    /// Chat and completions requests answered successfully (status 200; a stream counts when it starts).
    public var generations: Int
    /// Of `generations`, the streamed ones.
    public var streams: Int
    /// Embeddings requests answered successfully.
    public var embeddings: Int
    /// Errors injected by `SimulatorConfiguration.errorRate`.
    public var errors: Int
    /// Sum of `usage.prompt_tokens` of successful generation and embeddings answers.
    public var promptTokens: Int
    /// Sum of `usage.completion_tokens` of successful generations; a stream counts only once it has been
    /// sent in full (a stream cut by its client adds nothing).
    public var completionTokens: Int
    /// Requests received and not yet completely answered, on every path: queued, generating,
    /// streaming or hanging. A gauge: `resetStats()` leaves it alone.
    public var inFlight: Int

    /// Creates a snapshot; every counter defaults to zero.
    public init(
        requests: Int = 0,
        generations: Int = 0,
        streams: Int = 0,
        embeddings: Int = 0,
        errors: Int = 0,
        promptTokens: Int = 0,
        completionTokens: Int = 0,
        inFlight: Int = 0
    ) {
        self.requests = requests
        self.generations = generations
        self.streams = streams
        self.embeddings = embeddings
        self.errors = errors
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.inFlight = inFlight
    }
}
