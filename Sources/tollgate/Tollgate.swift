import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import TollgateCore
import TollgateLedger
import TollgateRedis
import TollgateServer

@main
struct Tollgate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tollgate",
        abstract: "An OpenAI-compatible gateway for a pool of LLM inference instances.",
        subcommands: [Serve.self, Check.self, Keys.self, Report.self, Migrate.self, Simulate.self, HashKey.self, ReferenceProxyCommand.self],
        defaultSubcommand: Serve.self)
}

/// Options shared by the commands that read the configuration.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "Configuration file or directory (env TOLLGATE_CONFIG; default: routes).")
    var config: String?

    var path: String { config ?? ProcessInfo.processInfo.environment["TOLLGATE_CONFIG"] ?? "routes" }
}

func makeLogger(level: String?) -> Logger {
    let chosen = level ?? ProcessInfo.processInfo.environment["TOLLGATE_LOG_LEVEL"] ?? "info"
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardOutput(label: label)
        handler.logLevel = Logger.Level(rawValue: chosen) ?? .info
        return handler
    }
    return Logger(label: "tollgate")
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway: data plane and control plane.")

    @OptionGroup var options: ConfigOptions
    @Option(help: "Data-plane address (overrides listen.host).") var host: String?
    @Option(help: "Data-plane port (overrides listen.port).") var port: Int?
    @Option(help: "Control-plane address (overrides admin.host).") var adminHost: String?
    @Option(help: "Control-plane port (overrides admin.port).") var adminPort: Int?
    @OptionGroup var ledger: LedgerOptions
    @Option(help: "Name of this replica, written into every ledger row (default: the host name).") var replica: String?
    @Option(help: "Redis URL redis://[:password@]host:port/db (env TOLLGATE_REDIS_URL): quota counters shared by replicas, and the cache.") var redis: String?
    @Option(help: "trace, debug, info, notice, warning, error (env TOLLGATE_LOG_LEVEL; default info).") var logLevel: String?

    func run() async throws {
        let logger = makeLogger(level: logLevel)
        let path = options.path
        let config: GatewayConfiguration
        do {
            config = try ConfigurationLoader.load(path: path)
        } catch {
            FileHandle.standardError.write(Data("tollgate: configuration refused\n\(error)\n".utf8))
            throw ExitCode(2)
        }
        let overrides = Gateway.Overrides(host: host, port: port, adminHost: adminHost, adminPort: adminPort)
        var settings = LedgerSettings(
            databasePath: ledger.databasePath, migrationsDirectory: try ledger.migrationsDirectory(),
            replica: replica ?? ProcessInfo.processInfo.hostName)
        settings.maxBacklog = config.ledger.maxBacklog
        settings.closeTimeout = config.ledger.closeTimeout
        settings.maxConcurrentReports = config.ledger.maxConcurrentReports
        var redisConfiguration: RedisConfiguration?
        if let url = redis ?? ProcessInfo.processInfo.environment["TOLLGATE_REDIS_URL"], !url.isEmpty {
            do {
                var r = try RedisConfiguration(url: url)
                r.connectTimeout = .nanoseconds(config.redis.connect.nanoseconds)
                r.commandTimeout = .nanoseconds(config.redis.command.nanoseconds)
                redisConfiguration = r
            } catch {
                FileHandle.standardError.write(Data("tollgate: --redis: \(error)\n".utf8))
                throw ExitCode(2)
            }
        }
        let gateway: Gateway
        do {
            gateway = try Gateway(configuration: config, configPath: path, overrides: overrides, ledger: settings,
                                  redis: redisConfiguration, logger: logger)
        } catch let error as AdminKeyFileError {
            FileHandle.standardError.write(Data("tollgate: \(error)\n".utf8))
            throw ExitCode(2)
        } catch {
            FileHandle.standardError.write(Data("tollgate: cannot open the ledger \(settings.databasePath)\n\(error)\n".utf8))
            throw ExitCode(2)
        }
        try await gateway.run { data, admin in
            logger.notice("ready", metadata: ["data_plane": "\(data)", "control_plane": "\(admin)", "config": "\(path)"])
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate the configuration, print the resolved routing table, and check that the ledger and Redis are reachable.")

    @OptionGroup var options: ConfigOptions
    @OptionGroup var ledger: LedgerOptions
    @Option(help: "Redis URL redis://[:password@]host:port/db (env TOLLGATE_REDIS_URL): checked with AUTH, SELECT and PING when given.") var redis: String?

    func run() throws {
        do {
            let config = try ConfigurationLoader.load(path: options.path)
            let table = RoutingTable(configuration: config)
            print("configuration \(options.path): OK")
            print("data plane \(config.listen), control plane \(config.admin)")
            print(table.render(), terminator: "")
        } catch let errors as ConfigurationErrors {
            FileHandle.standardError.write(Data("configuration \(options.path): \(errors.errors.count) error(s)\n\(errors)\n".utf8))
            throw ExitCode(1)
        }
        let databaseOK = checkDatabase()
        let redisOK = checkRedis()
        let adminKeyOK = checkAdminKey()
        if !databaseOK || !redisOK || !adminKeyOK { throw ExitCode(1) }
    }

    /// The admin key file as `serve` would read it: present, readable, owner-only (0600).
    private func checkAdminKey() -> Bool {
        guard let config = try? ConfigurationLoader.load(path: options.path) else { return true }
        do {
            let key = try AdminKeyFile.read(configuration: config)
            let source = ProcessInfo.processInfo.environment["TOLLGATE_ADMIN_KEY"] != nil ? "TOLLGATE_ADMIN_KEY" : config.auth.adminKeyFile ?? "-"
            print(key == nil ? "admin key: none (the admin API is off)" : "admin key: OK (\(source))")
            return true
        } catch {
            FileHandle.standardError.write(Data("admin key: \(error)\n".utf8))
            return false
        }
    }

    /// Opens the ledger read-only and verifies its migrations, as `serve` would before applying them.
    private func checkDatabase() -> Bool {
        let path = ledger.databasePath
        func fail(_ message: String) -> Bool {
            FileHandle.standardError.write(Data("database \(path): \(message)\n".utf8))
            return false
        }
        let directory: String
        do { directory = try ledger.migrationsDirectory() } catch { return fail("\(error)") }
        let migrations: [Migration]
        do { migrations = try MigrationLoader.load(directory: directory) } catch { return fail("\(error)") }
        guard FileManager.default.fileExists(atPath: path) else {
            // `serve` creates the file (and its directories): say whether it will be able to.
            var parent = (path as NSString).deletingLastPathComponent
            if parent.isEmpty { parent = "." }
            while !FileManager.default.fileExists(atPath: parent) && parent != "/" && parent != "." {
                parent = (parent as NSString).deletingLastPathComponent
                if parent.isEmpty { parent = "." }
            }
            guard FileManager.default.isWritableFile(atPath: parent) else {
                return fail("does not exist, and \(parent) is not writable: serve could not create it")
            }
            print("database \(path): not created yet (serve creates it with \(migrations.count) migration(s) from \(directory))")
            return true
        }
        do {
            let database = try LedgerDatabase.open(path: path, migrations: migrations, readOnly: true)
            defer { try? database.close() }
            let applied = try database.appliedMigrations().count
            let pending = migrations.count - applied
            print("database \(path): OK, \(applied) migration(s) applied" + (pending > 0 ? ", \(pending) pending (serve applies them)" : ""))
            return true
        } catch {
            return fail("\(error)")
        }
    }

    /// Connects to Redis (AUTH and SELECT as the URL says), sends PING, and gives up after
    /// `redisTimeout`. Runs on an event loop of its own; this command waits for it.
    private func checkRedis() -> Bool {
        guard let url = redis ?? ProcessInfo.processInfo.environment["TOLLGATE_REDIS_URL"], !url.isEmpty else {
            print("redis: not configured (quotas are per replica)")
            return true
        }
        let configuration: RedisConfiguration
        do {
            configuration = try RedisConfiguration(url: url)
        } catch {
            FileHandle.standardError.write(Data("redis: \(error)\n".utf8))
            return false
        }
        let target = "\(configuration.host):\(configuration.port)/\(configuration.database)"
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        var quiet = Logger(label: "tollgate-check")
        quiet.logLevel = .critical  // the outcome is reported below, once
        let logger = quiet
        let started = NIODeadline.now()
        let deadline = started + Self.redisTimeout
        let reply: EventLoopFuture<Void> = loop.flatSubmit {
            let connection = RedisConnection(configuration: configuration, eventLoop: loop, logger: logger)
            connection.start()
            let promise = loop.makePromise(of: Void.self)
            func attempt() {
                if connection.isAvailable {
                    connection.ping().assumeIsolated().whenComplete { result in
                        _ = connection.close()
                        promise.completeWith(result)
                    }
                } else if NIODeadline.now() >= deadline {
                    _ = connection.close()
                    promise.fail(RedisCheckFailure.notReady)
                } else {
                    loop.assumeIsolated().scheduleTask(in: .milliseconds(20)) { attempt() }
                }
            }
            attempt()
            return promise.futureResult
        }
        do {
            try reply.wait()
            let ms = Double((NIODeadline.now() - started).nanoseconds) / 1e6
            print("redis \(target): OK (PING in \(String(format: "%.1f", ms)) ms)")
            return true
        } catch RedisCheckFailure.notReady {
            FileHandle.standardError.write(Data("redis \(target): not reachable within \(Self.redisTimeout.nanoseconds / 1_000_000) ms (refused, unreachable, or AUTH/SELECT failed)\n".utf8))
            return false
        } catch {
            FileHandle.standardError.write(Data("redis \(target): \(error)\n".utf8))
            return false
        }
    }

    static let redisTimeout = TimeAmount.seconds(2)
}

enum RedisCheckFailure: Error { case notReady }

struct HashKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-key",
        abstract: "Print the SHA-256 of an API key, as configuration stores it (reads the key from stdin when none is given).")

    @Argument(help: "The key. Prefer stdin: arguments end up in shell history.") var key: String?

    func run() throws {
        let text = key ?? (readLine(strippingNewline: true) ?? "")
        guard !text.isEmpty else { throw ValidationError("no key given") }
        print(KeyDigest.hex(of: text))
    }
}
