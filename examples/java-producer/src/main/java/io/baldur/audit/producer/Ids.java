package io.baldur.audit.producer;

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;
import java.util.HexFormat;
import java.util.UUID;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/** Event ids (UUIDv7), trace ids from W3C traceparent, pseudonyms of actor ids. */
public final class Ids {
  private static final SecureRandom RANDOM = new SecureRandom();
  private static final Pattern TRACEPARENT =
      Pattern.compile("([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", Pattern.DOTALL);

  private Ids() {}

  /** A UUIDv7 (RFC 9562) from a millisecond time and 10 random bytes. */
  public static UUID uuid7(long unixMs, byte[] random) {
    long rand = 0;
    long high = 0;
    for (int i = 0; i < 2; i++) {
      high = high << 8 | (random[i] & 0xFF);
    }
    for (int i = 2; i < 10; i++) {
      rand = rand << 8 | (random[i] & 0xFF);
    }
    // 80 random bits r = high(16) || rand(64); rand_a = r >> 68 (12 bits), rand_b = r & (2^62 - 1)
    long randA = (high >> 4) & 0xFFF;
    long most = (unixMs & 0xFFFF_FFFF_FFFFL) << 16 | 0x7L << 12 | randA;
    long least = (0b10L << 62) | (rand & 0x3FFF_FFFF_FFFF_FFFFL);
    return new UUID(most, least);
  }

  /** A fresh UUIDv7 for now. */
  public static UUID uuid7() {
    byte[] random = new byte[10];
    RANDOM.nextBytes(random);
    return uuid7(System.currentTimeMillis(), random);
  }

  /** The trace id in a W3C traceparent, or null when it must be refused. */
  public static String traceIdOf(String traceparent) {
    if (traceparent == null || traceparent.length() > 512) {
      return null;
    }
    String text = traceparent.replaceAll("^[ \\t]+|[ \\t]+$", "");
    Matcher match = TRACEPARENT.matcher(text);
    if (!match.matches()) {
      return null;
    }
    String version = match.group(1);
    if (version.equals("ff") || (version.equals("00") && match.group(5) != null)) {
      return null;
    }
    if (match.group(2).equals("0".repeat(32)) || match.group(3).equals("0".repeat(16))) {
      return null;
    }
    return match.group(2);
  }

  /** A traceparent header value (version 00, sampled, a random span id) for {@code traceId}. */
  public static String traceparent(String traceId) {
    byte[] span = new byte[8];
    do {
      RANDOM.nextBytes(span);
    } while (HexFormat.of().formatHex(span).equals("0".repeat(16)));
    return "00-" + traceId + "-" + HexFormat.of().formatHex(span) + "-01";
  }

  /** {@code psn1-} and HMAC-SHA256(key, UTF-8 actor id) in hex. */
  public static String pseudonym(byte[] key, String actorId) {
    try {
      Mac mac = Mac.getInstance("HmacSHA256");
      mac.init(new SecretKeySpec(key, "HmacSHA256"));
      return "psn1-" + HexFormat.of().formatHex(mac.doFinal(actorId.getBytes(StandardCharsets.UTF_8)));
    } catch (GeneralSecurityException e) {
      throw new IllegalStateException("HMAC-SHA256 is not available", e);
    }
  }
}
