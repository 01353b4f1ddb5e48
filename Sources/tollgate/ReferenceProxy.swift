import ArgumentParser
import NIOCore
import NIOPosix
import TollgateSimulator

/// `tollgate reference-proxy`: the bare SwiftNIO forwarder `scripts/bench` measures beside
/// nginx and the gateway (see `ReferenceProxy`). Not for use in front of instances.
struct ReferenceProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reference-proxy",
        abstract: "Benchmark reference: the bare SwiftNIO forwarder (no gateway features).",
        shouldDisplay: false)

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port: Int
    @Option(help: "Upstream host.") var upstreamHost = "127.0.0.1"
    @Option(help: "Upstream port.") var upstreamPort: Int
    @Option(help: "Event loops.") var loops = System.coreCount
    @Flag(help: "The forwarder without NIO's HTTP codecs (raw bytes, the gateway's head parser).") var raw = false

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, loops))
        let channel = raw
            ? try await RawReferenceProxy.start(host: host, port: port, upstreamHost: upstreamHost, upstreamPort: upstreamPort, group: group)
            : try await ReferenceProxy.start(host: host, port: port, upstreamHost: upstreamHost, upstreamPort: upstreamPort, group: group)
        print("\(raw ? "raw " : "")reference proxy on \(host):\(port) -> \(upstreamHost):\(upstreamPort)")
        try await channel.closeFuture.get()
    }
}
