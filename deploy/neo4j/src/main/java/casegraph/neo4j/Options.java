package casegraph.neo4j;

import java.util.HashMap;
import java.util.Map;
import java.util.Set;

/** Parses {@code --name value} and {@code --flag} arguments into a map. */
final class Options {
  private static final Set<String> FLAGS = Set.of("no-auth");
  private static final Set<String> VALUED = Set.of("port", "home", "password-file", "page-cache");

  private Options() {}

  static Map<String, String> parse(String[] args) {
    Map<String, String> out = new HashMap<>();
    for (int i = 0; i < args.length; i++) {
      String arg = args[i];
      String name = arg.startsWith("--") ? arg.substring(2) : "";
      if (FLAGS.contains(name)) {
        out.put(name, "true");
      } else if (VALUED.contains(name) && i + 1 < args.length) {
        out.put(name, args[++i]);
      } else {
        Server.fail(
            "unknown or incomplete argument "
                + arg
                + "; use --port N --home DIR --password-file F --page-cache MB --no-auth");
      }
    }
    return out;
  }
}
