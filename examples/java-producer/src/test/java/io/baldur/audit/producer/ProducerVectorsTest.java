package io.baldur.audit.producer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.function.Function;
import java.util.stream.Stream;
import java.util.stream.StreamSupport;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/** Every case of schemas/vectors/producer-v1.json, run against this producer. */
class ProducerVectorsTest {
  static final JsonNode DOC = load("producer-v1.json");

  static JsonNode load(String name) {
    String dir = System.getProperty("baldur.vectors", "../../schemas/vectors");
    try {
      return JsonMapper.builder().build().readTree(Files.readString(Path.of(dir, name)));
    } catch (Exception e) {
      throw new IllegalStateException("cannot read " + name + " from " + dir, e);
    }
  }

  static Stream<DynamicTest> each(String section, Function<JsonNode, String> name, java.util.function.Consumer<JsonNode> check) {
    return StreamSupport.stream(DOC.get(section).spliterator(), false)
        .map(c -> DynamicTest.dynamicTest(section + ": " + name.apply(c), () -> check.accept(c)));
  }

  @TestFactory
  Stream<DynamicTest> sensitiveKeys() {
    return each("sensitive_keys", c -> c.get("key").textValue(),
        c -> assertEquals(c.get("sensitive").booleanValue(), Redactor.isSensitiveKey(c.get("key").textValue()), c.get("key").textValue()));
  }

  @TestFactory
  Stream<DynamicTest> redactText() {
    return each("redact_text", c -> c.get("description").textValue(),
        c -> assertEquals(c.get("expected").textValue(), new Redactor().redactText(c.get("text").textValue())));
  }

  @TestFactory
  Stream<DynamicTest> redactValue() {
    return each("redact_value", c -> c.get("description").textValue(),
        c -> assertEquals(c.get("expected"), new Redactor().redact(c.get("value"))));
  }

  @TestFactory
  Stream<DynamicTest> redactKeyed() {
    Redactor keyed = new Redactor(HexFormat.of().parseHex(DOC.get("redaction_key_hex").textValue()));
    return each("redact_keyed", c -> c.get("description").textValue(),
        c -> assertEquals(c.get("expected"), keyed.redact(c.get("value"))));
  }

  @TestFactory
  Stream<DynamicTest> maskClientIp() {
    return each("mask_client_ip", c -> c.get("description").textValue(), c -> {
      JsonNode expected = c.get("expected");
      assertEquals(expected.isNull() ? null : expected.textValue(), IpMask.maskClientIp(c.get("input")));
    });
  }

  @Test
  void pseudonyms() {
    byte[] key = HexFormat.of().parseHex(DOC.get("pseudonym_key_hex").textValue());
    for (JsonNode c : DOC.get("pseudonyms")) {
      assertEquals(c.get("expected").textValue(), Ids.pseudonym(key, c.get("actor_id").textValue()));
    }
  }

  @TestFactory
  Stream<DynamicTest> traceparents() {
    return each("traceparents", c -> c.get("description").textValue(), c -> {
      String got = Ids.traceIdOf(c.get("traceparent").textValue());
      if (c.get("trace_id").isNull()) {
        assertNull(got);
      } else {
        assertEquals(c.get("trace_id").textValue(), got);
      }
    });
  }

  @Test
  void schemaFingerprint() {
    assertEquals(DOC.get("schema_fingerprint_hex").textValue(), HexFormat.of().formatHex(ChangeEvent.fingerprint()));
  }

  static ChangeEvent eventOf(JsonNode f) {
    Map<String, String> attributes = new LinkedHashMap<>();
    for (JsonNode pair : f.get("attributes")) {
      attributes.put(pair.get(0).textValue(), pair.get(1).textValue());
    }
    return new ChangeEvent(
        UUID.fromString(f.get("event_id").textValue()),
        f.get("occurred_at_us").longValue(),
        f.get("actor").textValue(),
        f.get("actor_type").textValue(),
        f.get("action").textValue(),
        f.get("target").textValue(),
        f.get("before").textValue(),
        f.get("after").textValue(),
        f.get("reason").textValue(),
        f.get("source").textValue(),
        f.get("trace_id").textValue(),
        f.get("client_ip").textValue(),
        attributes);
  }

  @TestFactory
  Stream<DynamicTest> encodings() {
    return each("encodings", c -> c.get("description").textValue(),
        c -> assertEquals(c.get("value_hex").textValue(), HexFormat.of().formatHex(eventOf(c.get("event")).validate().encode())));
  }

  @Test
  void uuid7() {
    for (JsonNode c : DOC.get("uuid7")) {
      UUID made = Ids.uuid7(c.get("unix_ms").longValue(), HexFormat.of().parseHex(c.get("random_hex").textValue()));
      assertEquals(c.get("expected").textValue(), made.toString());
    }
  }

  @Test
  void invalidEventIdIsRefused() {
    AuditProducer producer = new AuditProducer(new Redactor(), null);
    for (String id : List.of("nope", "019AD0C2-5E00-7ABC-8DEF-0123456789AB", "00000000-0000-0000-0000-000000000000")) {
      JsonNode line = JsonText.MAPPER.createObjectNode().put("actor", "a").put("action", "update").put("target", "t").put("event_id", id);
      ChangeEvent.InvalidEvent error = assertThrows(ChangeEvent.InvalidEvent.class, () -> producer.prepare(line));
      assertEquals("event_id", error.field);
    }
  }
}
