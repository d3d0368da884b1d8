package io.baldur.audit.producer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import java.util.regex.MatchResult;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * Redaction of secrets before an event is encoded (docs/PRODUCERS.md, "Redaction"): by key
 * name and by value shape, with the fixed marker {@code [REDACTED]} or, with a key, the keyed
 * fingerprint {@code [REDACTED:hmac-sha256:<16 hex>]}. A port of the reference rules; the cases
 * of schemas/vectors/producer-v1.json are its tests.
 *
 * <p>Regular expressions are written as the reference's, with two translations: Python's
 * {@code \s} (for text) is the explicit class {@link #WS} (it includes U+001C..U+001F, which
 * Java's Unicode class does not), and Python's {@code $} ("end, or before a final newline") is
 * {@code (?=\n?\z)}.
 */
public final class Redactor {
  public static final String REDACTED = "[REDACTED]";
  public static final String TOO_DEEP = "[REDACTED:too-deep]";
  public static final int MAX_JSON_DEPTH = 64;
  public static final int MAX_JSON_BYTES = 256 * 1024;
  public static final int MIN_KEY_BYTES = 16;
  private static final byte[] DOMAIN = "baldur-audit/redaction/v1".getBytes(StandardCharsets.US_ASCII);

  /** The code points Python's str.isspace() accepts (CHAIN.md §7, "blank"). */
  static final String WS =
      "\\t\\n\\x0B\\f\\r\\x1C-\\x20\\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000";

  private static final String END = "(?=\\n?\\z)";
  private static final Pattern MARKER =
      Pattern.compile("\\[REDACTED(?::hmac-sha256:[0-9a-f]{16}|:too-deep)?\\]");
  static final List<String> SENSITIVE_WORDS =
      List.of(
          "password", "passwd", "passphrase", "pwd", "secret", "token", "apikey", "privatekey",
          "credential", "authoriz", "cookie", "sessionid", "sessionkey", "accesskey", "signature",
          "encryptionkey", "signingkey", "masterkey", "hmackey", "sharedkey", "sshkey");
  static final Set<String> SENSITIVE_KEYS = Set.of("auth", "session", "pass", "pw", "jwt", "bearer");
  private static final Pattern SENSITIVE =
      Pattern.compile(String.join("|", SENSITIVE_WORDS) + "|auth(?:header|key|value|string)?" + END);
  private static final Pattern DESCRIPTOR =
      Pattern.compile(
          "(?:ttl|timeout|expiry|expiration|expires|expiresin|expiresat|lifetime|maxage|length"
              + "|policy|rotation|algorithm|count|limit|type|name|path|file|ref|version|enabled"
              + "|required|headername|url|uri|endpoint)"
              + END);
  private static final Pattern INNOCENT =
      Pattern.compile(
          "tokeniz(?:ers?|ation|ed|e)?"
              + "|^(?:max|min|num|total|input|output|prompt|completion)[a-z]*tokens?"
              + END);
  private static final List<String> NAME_KEYS = List.of("name", "key", "header", "variable");
  private static final Set<String> VALUE_KEYS = Set.of("value", "val", "secret", "data");

  private static final Pattern PEM =
      Pattern.compile(
          "-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
              + ".*?(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\\z)",
          Pattern.DOTALL);
  private static final Pattern URL_CREDENTIALS =
      Pattern.compile(
          "(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]{0,30}://[^" + WS + ":/?#@\\[\\]]*:)([^" + WS + "/?#]+)@");
  private static final Pattern KEY_SEPARATOR =
      Pattern.compile("(?<![A-Za-z0-9_.])([A-Za-z][A-Za-z0-9_.-]*)([\"']?)[ \\t]*([:=])[ \\t]*");
  private static final Pattern SCHEME =
      Pattern.compile("(?iu:bearer|basic|digest|negotiate|ntlm|token)[ \\t]+");
  private static final Map<String, Pattern> BARE_END =
      Map.of(
          "json", Pattern.compile("[" + WS + ",}\\]]"),
          "=", Pattern.compile("[" + WS + "&;\"']"),
          ":", Pattern.compile("[\\r\\n]"));
  private static final Set<String> LITERALS = Set.of("true", "false", "null", "True", "False", "None");
  private static final Pattern FLAG = Pattern.compile("--?([A-Za-z][A-Za-z0-9_.-]{0,127})");
  private static final Pattern FLAG_WORD =
      Pattern.compile(
          "(?<![^" + WS + "\"'])--?([A-Za-z][A-Za-z0-9_.-]*)[ \\t]+(?!--)(?=[^" + WS + "])");
  private static final Pattern JWT =
      Pattern.compile(
          "(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{6,}\\.[A-Za-z0-9_-]{2,}\\.[A-Za-z0-9_-]*");
  private static final Pattern AUTH_SCHEME =
      Pattern.compile("(?iu)(?<![A-Za-z0-9_-])(bearer|basic)([ \\t]+)([A-Za-z0-9._~+/-]+=*)");
  private static final Pattern TOKEN_SHAPES =
      Pattern.compile(
          "(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"
              + "|(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{30,}"
              + "|(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{20,}"
              + "|(?<![A-Za-z0-9])xox[baprs]-[A-Za-z0-9-]{10,}"
              + "|(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35,}"
              + "|(?<![A-Za-z0-9_])(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,}");

  private final byte[] key;

  /** A redactor with the fixed marker. */
  public Redactor() {
    this.key = null;
  }

  /** A redactor with keyed fingerprints; the key must be at least 16 bytes. */
  public Redactor(byte[] key) {
    if (key == null || key.length < MIN_KEY_BYTES) {
      throw new IllegalArgumentException("redaction key: expected at least " + MIN_KEY_BYTES + " bytes");
    }
    this.key = key.clone();
  }

  /** Whether values under {@code name} are replaced whole (the key-name rule). */
  public static boolean isSensitiveKey(String name) {
    String normalized = name.toLowerCase(Locale.ROOT).replaceAll("[-_. ]", "");
    if (SENSITIVE_KEYS.contains(normalized)) {
      return true;
    }
    normalized = INNOCENT.matcher(normalized).replaceAll("");
    return SENSITIVE.matcher(normalized).find() && !DESCRIPTOR.matcher(normalized).find();
  }

  /** The marker that replaces {@code secret} (a JSON value). */
  public String marker(JsonNode secret) {
    if (key == null) {
      return REDACTED;
    }
    String canonical = secret.isTextual() ? secret.textValue() : PythonJson.dumps(secret);
    return fingerprint(canonical);
  }

  private String marker(String secret) {
    return key == null ? REDACTED : fingerprint(secret);
  }

  private String fingerprint(String canonical) {
    try {
      Mac mac = Mac.getInstance("HmacSHA256");
      mac.init(new SecretKeySpec(key, "HmacSHA256"));
      mac.update(DOMAIN);
      byte[] digest = mac.doFinal(canonical.getBytes(StandardCharsets.UTF_8));
      return "[REDACTED:hmac-sha256:" + HexFormat.of().formatHex(digest).substring(0, 16) + "]";
    } catch (GeneralSecurityException e) {
      throw new IllegalStateException("HMAC-SHA256 is not available", e);
    }
  }

  // --- structures ------------------------------------------------------------------------------

  /** A copy of {@code value} with secrets replaced. */
  public JsonNode redact(JsonNode value) {
    return walk(value, 1);
  }

  private static boolean isAtom(JsonNode node) {
    return node.isNumber() || node.isBoolean() || node.isNull();
  }

  private JsonNode walk(JsonNode node, int depth) {
    if (depth > MAX_JSON_DEPTH) {
      return JsonNodeFactory.instance.textNode(TOO_DEEP);
    }
    if (node.isTextual()) {
      return JsonNodeFactory.instance.textNode(redactText(node.textValue()));
    }
    if (node.isObject()) {
      ObjectNode copy = JsonNodeFactory.instance.objectNode();
      String named = null;
      for (String name : NAME_KEYS) {
        JsonNode candidate = node.get(name);
        if (candidate != null && candidate.isTextual()) {
          named = candidate.textValue();
          break;
        }
      }
      boolean secretValue = named != null && isSensitiveKey(named);
      Iterator<Map.Entry<String, JsonNode>> fields = node.fields();
      while (fields.hasNext()) {
        Map.Entry<String, JsonNode> field = fields.next();
        String name = field.getKey();
        JsonNode child = field.getValue();
        boolean sensitive = isSensitiveKey(name) || (secretValue && VALUE_KEYS.contains(name));
        if (sensitive) {
          copy.set(name, replace(child));
        } else if (isAtom(child)) {
          copy.set(name, child);
        } else {
          copy.set(name, walk(child, depth + 1));
        }
      }
      return copy;
    }
    if (node.isArray()) {
      ArrayNode items = JsonNodeFactory.instance.arrayNode();
      boolean afterFlag = false;
      for (JsonNode child : node) {
        boolean isText = child.isTextual();
        if (afterFlag && !(isText && child.textValue().startsWith("--"))) {
          items.add(replace(child));
        } else if (isAtom(child)) {
          items.add(child);
        } else {
          items.add(walk(child, depth + 1));
        }
        afterFlag = isText && child.textValue().startsWith("-") && isSecretFlag(child.textValue());
      }
      return items;
    }
    return node;
  }

  private static boolean isSecretFlag(String item) {
    Matcher flag = FLAG.matcher(item);
    return flag.matches() && isSensitiveKey(flag.group(1));
  }

  private JsonNode replace(JsonNode secret) {
    if (secret.isNull() || secret.isBoolean()) {
      return secret;
    }
    if (secret.isTextual() && MARKER.matcher(secret.textValue()).matches()) {
      return secret;
    }
    return JsonNodeFactory.instance.textNode(marker(secret));
  }

  // --- text ------------------------------------------------------------------------------------

  private static String replaceAll(Pattern pattern, String text, Function<MatchResult, String> with) {
    return pattern.matcher(text).replaceAll(match -> Matcher.quoteReplacement(with.apply(match)));
  }

  /** {@code text} with every secret the value-shape rules find replaced. */
  public String redactText(String text) {
    text = replaceAll(PEM, text, m -> marker(m.group()));
    text = replaceAll(URL_CREDENTIALS, text, this::urlPassword);
    text = redactPairs(text);
    text = redactFlagWords(text);
    text = replaceAll(JWT, text, m -> marker(m.group()));
    text = replaceAll(AUTH_SCHEME, text, this::schemeCredential);
    return replaceAll(TOKEN_SHAPES, text, m -> marker(m.group()));
  }

  private String urlPassword(MatchResult match) {
    String password = match.group(2);
    if (MARKER.matcher(password).matches()) {
      return match.group();
    }
    return match.group(1) + marker(password) + "@";
  }

  private static boolean looksLikeCredential(String word) {
    if (word.codePointCount(0, word.length()) < 8) {
      return false;
    }
    boolean digitOrMark = word.chars().anyMatch(c -> Character.isDigit(c) || "._~+/=-".indexOf(c) >= 0);
    boolean upperInside = word.substring(1).chars().anyMatch(Character::isUpperCase);
    return digitOrMark || upperInside;
  }

  private String schemeCredential(MatchResult match) {
    if (!looksLikeCredential(match.group(3))) {
      return match.group();
    }
    return match.group(1) + match.group(2) + marker(match.group(3));
  }

  private String redactFlagWords(String text) {
    if (text.indexOf('-') < 0) {
      return text;
    }
    StringBuilder out = new StringBuilder();
    int done = 0;
    boolean changed = false;
    Matcher match = FLAG_WORD.matcher(text);
    while (match.find()) {
      if (match.start() < done || !isSensitiveKey(match.group(1))) {
        continue;
      }
      int[] span = secretSpan(text, match.end(), "", "=", "");
      if (span == null) {
        continue;
      }
      out.append(text, done, span[0]).append(marker(text.substring(span[0], span[1])));
      done = span[1];
      changed = true;
    }
    return changed ? out.append(text.substring(done)).toString() : text;
  }

  private String redactPairs(String text) {
    if (text.indexOf('=') < 0 && text.indexOf(':') < 0) {
      return text;
    }
    StringBuilder out = new StringBuilder();
    int done = 0;
    boolean changed = false;
    Matcher match = KEY_SEPARATOR.matcher(text);
    while (match.find()) {
      if (match.start() < done || !isSensitiveKey(match.group(1))) {
        continue;
      }
      int start = match.end();
      Matcher scheme = SCHEME.matcher(text).region(start, text.length());
      if (scheme.lookingAt()) {
        start = scheme.end();
      }
      String opener = match.start() > 0 ? String.valueOf(text.charAt(match.start() - 1)) : "";
      boolean quoted = opener.equals("'") || opener.equals("\"");
      int[] span = secretSpan(text, start, match.group(2), match.group(3), quoted ? opener : "");
      if (span == null) {
        continue;
      }
      String wrap = span[2] == 1 ? match.group(2) : "";
      out.append(text, done, span[0]).append(wrap).append(marker(text.substring(span[0], span[1]))).append(wrap);
      done = span[1];
      changed = true;
    }
    return changed ? out.append(text.substring(done)).toString() : text;
  }

  /**
   * Where a pair's secret begins and ends: {begin, end, wrap} (wrap 1: the marker is wrapped in
   * the key's quote), or null when there is nothing to redact.
   */
  private static int[] secretSpan(String text, int start, String keyQuote, String separator, String opener) {
    if (start >= text.length()) {
      return null;
    }
    char quote = text.charAt(start);
    int begin;
    int end;
    int wrap;
    if (quote == '\'' || quote == '"') {
      int index = start + 1;
      while (index < text.length() && text.charAt(index) != quote) {
        index += text.charAt(index) == '\\' ? 2 : 1;
      }
      begin = start + 1;
      end = Math.min(index, text.length());
      wrap = 0;
    } else {
      Matcher stop = BARE_END.get(keyQuote.isEmpty() ? separator : "json").matcher(text);
      begin = start;
      end = stop.find(start) ? stop.start() : text.length();
      if (!opener.isEmpty() && keyQuote.isEmpty()) {
        int closing = text.substring(0, end).indexOf(opener, begin);
        end = closing < 0 ? end : closing;
      }
      wrap = keyQuote.isEmpty() ? 0 : 1;
      if (!keyQuote.isEmpty() && LITERALS.contains(text.substring(begin, Math.max(begin, end)))) {
        return null;
      }
    }
    if (end <= begin || MARKER.matcher(text).region(begin, end).matches()) {
      return null;
    }
    return new int[] {begin, end, wrap};
  }

  /** The list the reference names SENSITIVE_WORDS, for documentation and tests. */
  static List<String> sensitiveWords() {
    return new ArrayList<>(SENSITIVE_WORDS);
  }
}
