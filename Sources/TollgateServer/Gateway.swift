import Dispatch
import Foundation
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import UnixSignals
import TollgateControlPlane
import TollgateCore
import TollgateDataPlane
import TollgateLedger
import TollgateRedis

/// Both planes, configuration reload and graceful shutdown: what `tollgate serve` runs.
public final class Gateway: Sendable {
    public let dataPlane: DataPlane
    /// The usage ledger and key store; nil for a gateway started without one (tests).
    public let ledger: Ledger?
    public let configPath: String?
    let logger: Logger
    let overrides: Overrides
    /// The admin key in force; re-read on every reload.
    public let adminKey: AdminKey
    /// The admin page's sessions: signed cookies every replica with the same admin key accepts.
    public let sessions: AdminSessions
    /// With Redis: keys, events and rollups shared with the other replicas.
    public let fleet: Fleet?
    /// Reloads run one at a time (SIGHUP and the admin API may overlap): each reads the files
    /// and installs what it read under this lock, so an older read is never installed last.
    private let reloading = NIOLock()

    /// Command-line and environment settings that win over the file.
    public struct Overrides: Sendable {
        public var host: String?
        public var port: Int?
        public var adminHost: String?
        public var adminPort: Int?
        public init(host: String? = nil, port: Int? = nil, adminHost: String? = nil, adminPort: Int? = nil) {
            self.host = host
            self.port = port
            self.adminHost = adminHost
            self.adminPort = adminPort
        }

        func apply(to config: inout GatewayConfiguration) {
            if let host { config.listen.host = host }
            if let port { config.listen.port = port }
            if let adminHost { config.admin.host = adminHost }
            if let adminPort { config.admin.port = adminPort }
        }
    }

    /// - Parameter configPath: where `reload()` re-reads the configuration from; `nil` for a
    ///   gateway built from an in-memory configuration (tests).
    public init(configuration: GatewayConfiguration, configPath: String?, overrides: Overrides = Overrides(),
                ledger: LedgerSettings? = nil, redis: RedisConfiguration? = nil, logger: Logger) throws {
        var config = configuration
        overrides.apply(to: &config)
        // First, before anything starts: a key file others can read refuses the start.
        do {
            self.adminKey = AdminKey(try AdminKeyFile.read(configuration: config).map { KeyDigest(hashing: Array($0.utf8)) })
        } catch let error as AdminKeyFileError where !error.isInsecure {
            logger.error("the admin API is off", metadata: ["error": "\(error)"])
            self.adminKey = AdminKey(nil)
        }
        if adminKey.digest == nil {
            logger.notice("no admin key (TOLLGATE_ADMIN_KEY or auth.admin_key_file): /admin/api is off")
        }
        let ledgerSettings = ledger
        let ledger = try ledger.map { try Ledger(settings: $0, logger: logger) }
        self.ledger = ledger
        self.dataPlane = DataPlane(table: RoutingTable(configuration: config), logger: logger, usageSink: ledger?.sink,
                                   usageReporter: ledger?.usageReporter())
        self.configPath = configPath
        self.overrides = overrides
        self.logger = logger
        self.sessions = AdminSessions(key: adminKey, shared: redis != nil)
        if let redis {
            var redisLogger = logger
            redisLogger[metadataKey: "component"] = "redis"
            let group = RedisClientGroup(configuration: redis, group: dataPlane.group, logger: redisLogger)
            dataPlane.attachRedis(group)
            self.fleet = Fleet(dataPlane: dataPlane, ledger: ledger, sessions: sessions, redis: group,
                               replica: ledgerSettings?.replica ?? ProcessInfo.processInfo.hostName, logger: logger)
        } else {
            self.fleet = nil
        }
        if let ledger {
            // With Redis the shared counters carry the history (see QuotaSync); else the ledger does.
            // Seeding is a courtesy (a restart does not hand out fresh windows); a ledger it
            // cannot read must not keep the gateway from starting.
            if redis == nil {
                do {
                    try ledger.seedQuotas(dataPlane)
                } catch {
                    logger.error("seeding the quota counters from the ledger failed; they start at zero", metadata: ["error": "\(error)"])
                }
            }
            try ledger.startKeyRefresh(into: dataPlane)
        }
    }

    /// Re-reads the configuration file and the admin key, validates them and swaps the routing
    /// table. A bad file (or an admin key file others can read) is refused and logged; the
    /// running configuration and key stay. A changed admin key ends every admin session.
    /// Settings that only a restart applies are kept at their running values and named in
    /// the outcome and the log. Reloads are serialised.
    @discardableResult
    public func reload() -> Result<ReloadOutcome, any Error> {
        guard let configPath else {
            return .failure(ConfigurationErrors(errors: [ConfigurationError(file: "<memory>", key: "", message: "this gateway was not started from a file")]))
        }
        return reloading.withLock {
            do {
                var config = try ConfigurationLoader.load(path: configPath)
                overrides.apply(to: &config)
                let key = try AdminKeyFile.read(configuration: config).map { KeyDigest(hashing: Array($0.utf8)) }
                let restart = dataPlane.state.table.configuration.restartRequired(toApply: config)
                let table = dataPlane.reload(config)
                let keyChanged = adminKey.install(key)
                if keyChanged {
                    logger.notice(key == nil ? "admin key removed; the admin API is off and every admin session ended"
                                             : "admin key changed; every admin session ended")
                }
                var metadata: Logger.Metadata = [
                    "generation": "\(table.generation)", "instances": "\(table.instances.count)", "departments": "\(table.departments.count)",
                ]
                if !restart.isEmpty { metadata["restart_required"] = "\(restart.joined(separator: ","))" }
                logger.notice("configuration reloaded", metadata: metadata)
                return .success(ReloadOutcome(table: table, restartRequired: restart, adminKeyChanged: keyChanged))
            } catch {
                logger.error("configuration reload refused; keeping the running configuration", metadata: ["error": "\(error)"])
                return .failure(error)
            }
        }
    }

    /// Runs both planes until SIGTERM or SIGINT, then shuts down gracefully. SIGHUP reloads.
    public func run(onReady: @escaping @Sendable (_ data: SocketAddress, _ admin: SocketAddress) async -> Void = { _, _ in }) async throws {
        let dataAddress = try await dataPlane.start()
        if let fleet {
            fleet.onReload { [self] in _ = reload() }
            fleet.start()
        }
        let reloadSource = installReloadSignal()
        defer { reloadSource.cancel() }
        let dataService = DataPlaneService(dataPlane: dataPlane, fleet: fleet)
        let app = ControlPlane.buildApplication(dataPlane: dataPlane, admin: adminServices(), logger: logger) { channel in
            if let admin = channel.localAddress {
                self.logger.notice("control plane listening", metadata: ["address": "\(admin)"])
                await onReady(dataAddress, admin)
            }
        }
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: dataService), .init(service: app)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
        if let ledger {
            let unwritten = await ledger.close()
            if unwritten > 0 {
                logger.error("ledger closed with rows not written", metadata: [
                    "rows_written": "\(ledger.writer.committedRows)", "rows_not_written": "\(unwritten)"])
            } else {
                logger.notice("ledger flushed", metadata: ["rows_written": "\(ledger.writer.committedRows)"])
            }
        }
        logger.notice("stopped")
    }

    /// The admin API's view of this gateway. The admin key comes from `TOLLGATE_ADMIN_KEY`, or
    /// from the file `auth.admin_key_file` names (re-read on reload); without either the admin
    /// API is off.
    public func adminServices() -> AdminServices {
        let dataPlane = self.dataPlane
        let ledger = self.ledger
        let notFound: @Sendable (String) throws -> (status: Int, body: String) = { _ in
            (404, GatewayError.notFound(method: "GET", path: "/admin/api/reports/quota").body)
        }
        var services = AdminServices(
            adminKey: adminKey,
            keys: ledger?.keys,
            refreshKeys: { try ledger?.refreshKeys(into: dataPlane)?.wait() },
            reload: { [self] in reload() },
            quotaReport: ledger?.quotaReporter(dataPlane: dataPlane) ?? notFound,
            ledger: ledger?.database, writer: ledger?.writer, reportGate: ledger?.reportGate)
        services.sessions = sessions
        services.fleet = fleet?.hooks
        return services
    }

    private func installReloadSignal() -> any DispatchSourceSignal {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler { [self] in
            logger.notice("SIGHUP: reloading configuration")
            reload()
        }
        source.resume()
        return source
    }
}

/// The data plane as a service: waits for graceful shutdown, then drains.
struct DataPlaneService: Service {
    let dataPlane: DataPlane
    /// Stopped first: it sends through the data plane's loops, which the shutdown ends.
    var fleet: Fleet?

    func run() async throws {
        try? await gracefulShutdown()
        await fleet?.stop()
        let grace = dataPlane.state.table.configuration.shutdownGrace
        await dataPlane.shutdown(grace: grace)
    }
}
