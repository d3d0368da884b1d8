package io.baldur.audit.producer;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;
import java.util.UUID;
import java.util.regex.Pattern;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageEncoder;

/**
 * One change event with its final field values (already redacted and masked), its validation
 * against the ledger's rules (CHAIN.md §7, rule 8), and its single-object encoding under
 * {@code change_event.avsc} with Apache Avro's {@link BinaryMessageEncoder}: {@code C3 01}, the
 * schema's CRC-64-AVRO fingerprint (little-endian), the Avro body.
 */
public record ChangeEvent(
    UUID eventId,
    long occurredAtMicros,
    String actor,
    String actorType,
    String action,
    String target,
    String before,
    String after,
    String reason,
    String source,
    String traceId,
    String clientIp,
    Map<String, String> attributes) {

  public static final Schema SCHEMA = loadSchema();
  private static final BinaryMessageEncoder<GenericRecord> ENCODER =
      new BinaryMessageEncoder<>(GenericData.get(), SCHEMA);
  private static final Pattern ACTION = Pattern.compile("[a-z][a-z0-9_.-]{0,63}");
  private static final Pattern TRACE_ID = Pattern.compile("[0-9a-f]{32}");
  private static final Pattern UUID_TEXT =
      Pattern.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}");
  static final long MIN_MICROS = -62_135_596_800_000_000L;
  static final long MAX_MICROS = 253_402_300_799_999_999L;

  public ChangeEvent {
    attributes = attributes == null ? Map.of() : new LinkedHashMap<>(attributes);
  }

  private static Schema loadSchema() {
    try (InputStream in = ChangeEvent.class.getResourceAsStream("/change_event.avsc")) {
      return new Schema.Parser().parse(Objects.requireNonNull(in, "change_event.avsc is not on the classpath"));
    } catch (IOException e) {
      throw new IllegalStateException("cannot read change_event.avsc", e);
    }
  }

  /** An invalid field: the message names the field, never its value. */
  public static final class InvalidEvent extends IllegalArgumentException {
    public final String field;

    public InvalidEvent(String field, String problem) {
      super(field + ": " + problem);
      this.field = field;
    }
  }

  /** Whether {@code text} is the canonical (lowercase, hyphenated) text of a UUID. */
  public static boolean isCanonicalUuid(String text) {
    return text != null && UUID_TEXT.matcher(text).matches();
  }

  static boolean isBlank(String text) {
    return text.codePoints().allMatch(ChangeEvent::isPythonSpace);
  }

  /** The "blank" code points of CHAIN.md §7. */
  static boolean isPythonSpace(int c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680
        || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F
        || c == 0x3000;
  }

  private static void text(String field, String value, int limit, boolean required) {
    if (value == null) {
      if (required) {
        throw new InvalidEvent(field, "is required");
      }
      return;
    }
    if (required && isBlank(value)) {
      throw new InvalidEvent(field, "must not be blank");
    }
    if (value.codePointCount(0, value.length()) > limit) {
      throw new InvalidEvent(field, "longer than " + limit + " characters");
    }
    if (value.indexOf('\0') >= 0) {
      throw new InvalidEvent(field, "contains a NUL character");
    }
    for (int i = 0; i < value.length(); i++) {
      char c = value.charAt(i);
      if (Character.isHighSurrogate(c) && (i + 1 >= value.length() || !Character.isLowSurrogate(value.charAt(i + 1)))) {
        throw new InvalidEvent(field, "is not valid Unicode");
      }
      if (Character.isLowSurrogate(c) && (i == 0 || !Character.isHighSurrogate(value.charAt(i - 1)))) {
        throw new InvalidEvent(field, "is not valid Unicode");
      }
    }
  }

  /** Check every field against the ledger's rules; throws {@link InvalidEvent}. JSON text in
   * before/after is checked by {@link JsonText#check}. */
  public ChangeEvent validate() {
    if (occurredAtMicros < MIN_MICROS || occurredAtMicros > MAX_MICROS) {
      throw new InvalidEvent("occurred_at", "outside years 1..9999");
    }
    text("actor.id", actor, 256, true);
    if (!"user".equals(actorType) && !"service".equals(actorType) && !"system".equals(actorType)) {
      throw new InvalidEvent("actor.type", "expected user, service or system");
    }
    if (action == null || !ACTION.matcher(action).matches()) {
      throw new InvalidEvent("action", "expected a lowercase word such as update or restart");
    }
    text("target", target, 1024, true);
    if (!"api".equals(source) && !"cli".equals(source) && !"scheduler".equals(source) && !"framework".equals(source)) {
      throw new InvalidEvent("source", "expected api, cli, scheduler or framework");
    }
    text("before", before, JsonText.MAX_BYTES, false);
    text("after", after, JsonText.MAX_BYTES, false);
    if (before != null) {
      JsonText.check("before", before);
    }
    if (after != null) {
      JsonText.check("after", after);
    }
    text("reason", reason, 4096, false);
    if (traceId != null && (!TRACE_ID.matcher(traceId).matches() || traceId.equals("0".repeat(32)))) {
      throw new InvalidEvent("trace_id", "expected 32 lowercase hex digits, not all zero");
    }
    text("client_ip", clientIp, 256, false);
    if (attributes.size() > 64) {
      throw new InvalidEvent("attributes", "more than 64 entries");
    }
    for (Map.Entry<String, String> entry : attributes.entrySet()) {
      text("attributes key", entry.getKey(), 1024, true);
      text("attributes value", entry.getValue(), 1024, false);
      if (entry.getValue() == null) {
        throw new InvalidEvent("attributes value", "expected a string");
      }
    }
    return this;
  }

  /** The single-object encoding of this event (the Kafka record value). */
  public byte[] encode() {
    GenericRecord actorRecord = new GenericData.Record(SCHEMA.getField("actor").schema());
    actorRecord.put("id", actor);
    actorRecord.put(
        "type", new GenericData.EnumSymbol(SCHEMA.getField("actor").schema().getField("type").schema(), actorType));
    GenericRecord record = new GenericData.Record(SCHEMA);
    record.put("event_id", eventId.toString());
    record.put("occurred_at", occurredAtMicros);
    record.put("actor", actorRecord);
    record.put("action", action);
    record.put("target", target);
    record.put("before", before);
    record.put("after", after);
    record.put("reason", reason);
    record.put("source", new GenericData.EnumSymbol(SCHEMA.getField("source").schema(), source));
    record.put("trace_id", traceId);
    record.put("client_ip", clientIp);
    record.put("attributes", new LinkedHashMap<>(attributes));
    try {
      ByteBuffer buffer = ENCODER.encode(record);
      byte[] bytes = new byte[buffer.remaining()];
      buffer.get(bytes);
      return bytes;
    } catch (IOException e) {
      throw new InvalidEvent("event", "cannot be Avro-encoded");
    }
  }

  /** The schema fingerprint as the header carries it (8 bytes, little-endian CRC-64-AVRO). */
  public static byte[] fingerprint() {
    byte[] header = new ChangeEvent(
            new UUID(0, 0), 0, "a", "user", "a", "a", null, null, null, "api", null, null, Map.of())
        .encode();
    byte[] out = new byte[8];
    System.arraycopy(header, 2, out, 0, 8);
    return out;
  }

  /** UTF-8 bytes, for callers that hash text. */
  static byte[] utf8(String text) {
    return text.getBytes(StandardCharsets.UTF_8);
  }
}
