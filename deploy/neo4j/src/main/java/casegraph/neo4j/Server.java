package casegraph.neo4j;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import inet.ipaddr.IPAddressString;
import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.QueryExecutionException;
import org.neo4j.io.ByteUnit;

/**
 * Neo4j Community, embedded, with the Bolt connector on 127.0.0.1.
 *
 * <p>Options (all optional): {@code --port N} (default 7687), {@code --home DIR} (default
 * ./neo4j-home; data under DIR/data), {@code --password-file F}, {@code --no-auth}, {@code
 * --page-cache SIZE_MB}. The password comes from {@code --password-file}, else the env
 * {@code CASEGRAPH_NEO4J_PASSWORD}, else the file named by {@code CASEGRAPH_NEO4J_PASSWORD_FILE};
 * it is set for user {@code neo4j} at every start and never printed. Prints one line {@code
 * casegraph-neo4j ready bolt://127.0.0.1:PORT} when Bolt accepts connections; SIGTERM shuts down
 * cleanly through a shutdown hook.
 *
 * <p>Cypher cannot reach the host: {@code LOAD CSV} from {@code file:} URLs is refused (and
 * confined to the empty HOME/import even if re-enabled), every IP address is blocked for URL
 * loads (http, https, ftp), and no plugin procedure is loaded (an empty plugin directory and
 * the allowlist {@link #PROCEDURES}). Community's built-in procedures cannot be switched off by
 * configuration; none of them reads a file or a URL (dbms.listConfig and dbms.queryJmx report
 * paths and JVM figures, never the password, which is a parameter, not configuration).
 */
public final class Server {
  private static final String USER = "neo4j";

  /** Plugin procedures that may load: only the built-in namespaces, so a jar dropped into a
   * plugin directory (apoc.load.*, apoc.import.*) is ignored. */
  static final List<String> PROCEDURES =
      List.of("db.*", "dbms.*", "tx.*");

  private Server() {}

  public static void main(String[] args) throws Exception {
    Map<String, String> opts = Options.parse(args);
    int port = Integer.parseInt(opts.getOrDefault("port", "7687"));
    Path home = Path.of(opts.getOrDefault("home", "neo4j-home")).toAbsolutePath();
    boolean auth = !opts.containsKey("no-auth");
    long pageCacheMb = Long.parseLong(opts.getOrDefault("page-cache", "256"));
    String password = auth ? readPassword(opts.get("password-file")) : null;

    Files.createDirectories(home);
    DatabaseManagementService dbms =
        confineToDatabase(new DatabaseManagementServiceBuilder(home), home)
            .setConfig(BoltConnector.enabled, true)
            .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
            .setConfig(HttpConnector.enabled, false)
            .setConfig(GraphDatabaseSettings.auth_enabled, auth)
            .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(pageCacheMb))
            .build();

    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  System.out.println("casegraph-neo4j shutting down");
                  dbms.shutdown();
                  stopped.countDown();
                },
                "casegraph-neo4j-shutdown"));

    try {
      if (auth) {
        setPassword(dbms, password);
      }
      dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME).executeTransactionally("RETURN 1");
    } catch (RuntimeException e) {
      System.err.println("casegraph-neo4j: start-up failed: " + e.getMessage());
      System.exit(1); // the shutdown hook stops the database
    }
    System.out.println(
        "casegraph-neo4j ready bolt://127.0.0.1:" + port + " auth=" + (auth ? "on" : "off"));
    System.out.flush();
    stopped.await();
  }

  /** Settings that keep Cypher from reading host files or reaching out over the network. */
  private static DatabaseManagementServiceBuilder confineToDatabase(
      DatabaseManagementServiceBuilder builder, Path home) throws IOException {
    // Embedded Neo4j has no import directory by default: file URLs then resolve from "/".
    Path importDir = Files.createDirectories(home.resolve("import"));
    Path pluginDir = Files.createDirectories(home.resolve("no-plugins"));
    return builder
        .setConfig(GraphDatabaseSettings.allow_file_urls, false)
        .setConfig(GraphDatabaseSettings.load_csv_file_url_root, importDir)
        .setConfig(
            GraphDatabaseInternalSettings.cypher_ip_blocklist,
            List.of(new IPAddressString("0.0.0.0/0"), new IPAddressString("::/0")))
        .setConfig(GraphDatabaseSettings.plugin_dir, pluginDir)
        .setConfig(GraphDatabaseSettings.procedure_allowlist, PROCEDURES);
  }

  private static void setPassword(DatabaseManagementService dbms, String password) {
    // A parameter keeps the secret out of query logs and of this process's output.
    try {
      dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME)
          .executeTransactionally(
              "ALTER USER " + USER + " SET PASSWORD $password CHANGE NOT REQUIRED",
              Map.of("password", password));
    } catch (QueryExecutionException e) {
      if (e.getMessage() == null || !e.getMessage().contains("cannot be the same")) {
        throw e;
      }
      // the stored password already is this one (a restart)
    }
  }

  private static String readPassword(String fileOption) throws IOException {
    String value = null;
    if (fileOption != null) {
      value = Files.readString(Path.of(fileOption), StandardCharsets.UTF_8).strip();
    } else if (notBlank(System.getenv("CASEGRAPH_NEO4J_PASSWORD"))) {
      value = System.getenv("CASEGRAPH_NEO4J_PASSWORD");
    } else if (notBlank(System.getenv("CASEGRAPH_NEO4J_PASSWORD_FILE"))) {
      Path file = Path.of(System.getenv("CASEGRAPH_NEO4J_PASSWORD_FILE"));
      value = Files.readString(file, StandardCharsets.UTF_8).strip();
    }
    if (!notBlank(value)) {
      fail(
          "no password: set CASEGRAPH_NEO4J_PASSWORD or CASEGRAPH_NEO4J_PASSWORD_FILE, pass"
              + " --password-file F, or --no-auth for a throwaway test server");
    }
    if (value.length() < 8) {
      fail("the Neo4j password must have at least 8 characters");
    }
    return value;
  }

  private static boolean notBlank(String s) {
    return s != null && !s.isBlank();
  }

  static void fail(String message) {
    System.err.println("casegraph-neo4j: " + message);
    System.exit(2);
  }
}
