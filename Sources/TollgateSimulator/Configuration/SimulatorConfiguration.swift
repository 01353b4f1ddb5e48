import NIOCore

/// How a simulated inference instance behaves: its model name, its latency profile, its capacity and
/// the failures it injects.
///
/// Every field has a default that gives a fast, always-successful instance (no delays, unlimited
/// capacity), which is what benchmarks want. Change it at run time with `SimulatedInstance.update(_:)`;
/// a new configuration applies to requests that arrive afterwards.
///
/// | field | default | meaning |
/// |---|---|---|
/// | `model` | `qwen2.5-0.5b-instruct` | model id reported by `/v1/models`, `/healthz` and every answer |
/// | `timeToFirstToken` | `.zero` | delay before the first streamed token, or before a non-streamed answer starts |
/// | `tokensPerSecond` | `0` | generation speed; `0` = no delay between tokens |
/// | `capacity` | `0` | generations served at once per instance; `0` = unlimited; beyond it requests queue FIFO |
/// | `defaultCompletionTokens` | `16` | completion length when the request sets no `max_tokens` |
/// | `errorRate` | `0` | fraction of generation requests answered at once with `errorStatus` |
/// | `errorStatus` | `500` | HTTP status of injected failures |
/// | `hang` | `false` | read requests but never answer them (a wedged process) |
public struct SimulatorConfiguration: Sendable, Equatable {
    /// The model id the instance serves; requests naming another model are answered anyway, with this name.
    public var model: String = "qwen2.5-0.5b-instruct"
    /// Delay between the start of a generation (after any capacity queueing) and its first token,
    /// or the start of the non-streamed JSON answer.
    public var timeToFirstToken: TimeAmount = .zero
    /// Tokens generated per second once the first token is out; `0` means no delay between tokens.
    public var tokensPerSecond: Double = 0
    /// Number of generations (chat and completions) in progress at once per instance; `0` = unlimited.
    /// Further requests wait in a FIFO queue, as on a busy GPU.
    public var capacity: Int = 0
    /// Completion length used when the request has neither `max_tokens` nor `max_completion_tokens`.
    public var defaultCompletionTokens: Int = 16
    /// Fraction (0...1) of generation requests answered immediately with `errorStatus` and an OpenAI error body.
    public var errorRate: Double = 0
    /// HTTP status code of injected failures.
    public var errorStatus: Int = 500
    /// When true, the instance accepts connections and reads requests (every path, `/healthz` included)
    /// but never answers them, until the connection is closed or the instance is stopped.
    public var hang: Bool = false

    /// A configuration with every default: a fast, healthy instance of `qwen2.5-0.5b-instruct`.
    public init() {}
}
