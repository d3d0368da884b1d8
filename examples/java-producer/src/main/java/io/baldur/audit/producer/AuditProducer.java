package io.baldur.audit.producer;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * A small baldur-audit producer: reads events as JSON lines on stdin (the keys of
 * {@code baldur-audit emit --file}, plus {@code event_id} and {@code occurred_at_us}), redacts,
 * masks, validates and encodes each, sends them to Kafka with an idempotent producer, and prints
 * each event id once Kafka has acknowledged it.
 *
 * <pre>
 * java -cp target/classes:target/lib/* io.baldur.audit.producer.AuditProducer \
 *     --bootstrap 127.0.0.1:29092 --topic baldur.audit.events [--redaction-key-hex HEX] &lt; events.jsonl
 * </pre>
 *
 * Exit codes: 0 all delivered; 1 some not delivered; 2 bad input or options (nothing sent).
 */
public final class AuditProducer {
  static final Set<String> KEYS =
      Set.of(
          "actor", "actor_type", "action", "target", "before", "after", "reason", "source",
          "client_ip", "trace_id", "traceparent", "attributes", "event_id", "occurred_at_us");

  private final Redactor redactor;
  private final String service;

  AuditProducer(Redactor redactor, String service) {
    this.redactor = redactor;
    this.service = service;
  }

  /** The event one JSON line describes, redacted, masked and validated; throws InvalidEvent. */
  ChangeEvent prepare(JsonNode line) {
    if (!line.isObject()) {
      throw new ChangeEvent.InvalidEvent("line", "expected a JSON object");
    }
    for (Iterator<String> it = line.fieldNames(); it.hasNext(); ) {
      String name = it.next();
      if (!KEYS.contains(name)) {
        throw new ChangeEvent.InvalidEvent("line", "unknown key");
      }
    }
    UUID eventId = Ids.uuid7();
    if (line.hasNonNull("event_id")) {
      String text = line.get("event_id").asText();
      if (!line.get("event_id").isTextual() || !ChangeEvent.isCanonicalUuid(text) || text.equals("00000000-0000-0000-0000-000000000000")) {
        throw new ChangeEvent.InvalidEvent("event_id", "expected a UUID in canonical lowercase form, not nil");
      }
      eventId = UUID.fromString(text);
    }
    long occurred = line.hasNonNull("occurred_at_us")
        ? line.get("occurred_at_us").asLong()
        : Math.multiplyExact(System.currentTimeMillis(), 1000L);
    String traceId = textOrNull(line, "trace_id");
    if (traceId != null) {
      traceId = traceId.toLowerCase(java.util.Locale.ROOT);
    } else if (line.hasNonNull("traceparent")) {
      traceId = Ids.traceIdOf(line.get("traceparent").asText());
      if (traceId == null) {
        throw new ChangeEvent.InvalidEvent("traceparent", "not a valid W3C traceparent");
      }
    }
    Map<String, String> attributes = new LinkedHashMap<>();
    JsonNode given = line.get("attributes");
    if (given != null && !given.isNull()) {
      if (!given.isObject()) {
        throw new ChangeEvent.InvalidEvent("attributes", "expected an object of strings");
      }
      JsonNode redacted = redactor.redact(given);
      for (Iterator<Map.Entry<String, JsonNode>> it = redacted.fields(); it.hasNext(); ) {
        Map.Entry<String, JsonNode> entry = it.next();
        if (!entry.getValue().isTextual()) {
          throw new ChangeEvent.InvalidEvent("attributes", "expected string values");
        }
        attributes.put(entry.getKey(), entry.getValue().textValue());
      }
    }
    if (service != null) {
      attributes.putIfAbsent("service", service);
    }
    String reason = textOrNull(line, "reason");
    return new ChangeEvent(
            eventId,
            occurred,
            redactText(textOrNull(line, "actor")),
            line.hasNonNull("actor_type") ? line.get("actor_type").asText() : "user",
            textOrNull(line, "action"),
            redactText(textOrNull(line, "target")),
            json("before", line.get("before")),
            json("after", line.get("after")),
            reason == null ? null : redactor.redactText(reason),
            line.hasNonNull("source") ? line.get("source").asText() : "api",
            traceId,
            IpMask.maskClientIp(line.get("client_ip")),
            attributes)
        .validate();
  }

  private String redactText(String text) {
    return text == null ? null : redactor.redactText(text);
  }

  private String json(String field, JsonNode value) {
    if (value == null || value.isNull()) {
      return null;
    }
    return JsonText.of(field, redactor.redact(value));
  }

  private static String textOrNull(JsonNode line, String name) {
    JsonNode value = line.get(name);
    if (value == null || value.isNull()) {
      return null;
    }
    if (!value.isTextual()) {
      throw new ChangeEvent.InvalidEvent(name, "expected a string");
    }
    return value.textValue();
  }

  private static void usage(PrintStream err, String problem) {
    err.println("error: " + problem);
    System.exit(2);
  }

  public static void main(String[] args) throws Exception {
    String bootstrap = "127.0.0.1:29092";
    String topic = "baldur.audit.events";
    String service = null;
    byte[] redactionKey = null;
    for (int i = 0; i < args.length; i++) {
      String value = i + 1 < args.length ? args[i + 1] : null;
      switch (args[i]) {
        case "--bootstrap" -> bootstrap = value;
        case "--topic" -> topic = value;
        case "--service" -> service = value;
        case "--redaction-key-hex" -> {
          try {
            redactionKey = HexFormat.of().parseHex(value == null ? "" : value);
          } catch (IllegalArgumentException e) {
            usage(System.err, "--redaction-key-hex is not hex");
          }
        }
        default -> usage(System.err, "unknown option (expected --bootstrap, --topic, --service, --redaction-key-hex)");
      }
      if (value == null) {
        usage(System.err, args[i] + " needs a value");
      }
      i++;
    }
    Redactor redactor = redactionKey == null ? new Redactor() : new Redactor(redactionKey);
    AuditProducer producer = new AuditProducer(redactor, service);
    List<ChangeEvent> events = new ArrayList<>();
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String line;
    int number = 0;
    while ((line = in.readLine()) != null) {
      number++;
      if (line.isBlank()) {
        continue;
      }
      try {
        events.add(producer.prepare(JsonText.MAPPER.readTree(line)));
      } catch (ChangeEvent.InvalidEvent e) {
        usage(System.err, "line " + number + ": " + e.getMessage());
      } catch (java.io.IOException e) {
        usage(System.err, "line " + number + ": not valid JSON");
      }
    }
    System.exit(send(bootstrap, topic, events));
  }

  /** Send with an idempotent producer; print each acknowledged id; 0 when all were delivered. */
  static int send(String bootstrap, String topic, List<ChangeEvent> events) throws InterruptedException {
    Properties config = new Properties();
    config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    config.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
    config.put(ProducerConfig.ACKS_CONFIG, "all");
    config.put(ProducerConfig.CLIENT_ID_CONFIG, "baldur-audit-java-producer");
    config.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
    config.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
    config.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
    config.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
    int failed = 0;
    try (KafkaProducer<byte[], byte[]> kafka = new KafkaProducer<>(config)) {
      List<Future<RecordMetadata>> sent = new ArrayList<>();
      for (ChangeEvent event : events) {
        ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(topic, null, event.encode());
        if (event.traceId() != null) {
          record.headers().add("traceparent", Ids.traceparent(event.traceId()).getBytes(StandardCharsets.US_ASCII));
        }
        sent.add(kafka.send(record));
      }
      kafka.flush();
      for (int i = 0; i < events.size(); i++) {
        try {
          sent.get(i).get(30, TimeUnit.SECONDS);
          System.out.println(events.get(i).eventId());
        } catch (Exception e) {
          failed++;
          System.err.println("error: event " + events.get(i).eventId() + " not delivered: " + e.getClass().getSimpleName());
        }
      }
    }
    return failed == 0 ? 0 : 1;
  }
}
