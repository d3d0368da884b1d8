package io.baldur.audit.producer;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.UUID;
import java.util.stream.Stream;
import java.util.stream.StreamSupport;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * The events of schemas/vectors/classification-v1.json: an event this producer builds from the
 * decoded fields encodes to exactly the value the ledger decoded them from. (Its validation is
 * stricter than the ledger's in places — depth counts scalars, repeated names are not written —
 * so it is not asked to accept every event the ledger accepts.)
 */
class ClassificationVectorsTest {
  static final JsonNode DOC = ProducerVectorsTest.load("classification-v1.json");

  @TestFactory
  Stream<DynamicTest> eventsEncodeToTheirValue() {
    return StreamSupport.stream(DOC.get("cases").spliterator(), false)
        .filter(c -> c.get("kind").textValue().equals("event") && c.has("event") && c.has("value_hex"))
        .map(c -> DynamicTest.dynamicTest(c.get("description").textValue(), () -> {
          JsonNode f = c.get("event");
          Map<String, String> attributes = new LinkedHashMap<>();
          for (JsonNode pair : f.get("attributes")) {
            attributes.put(pair.get(0).textValue(), pair.get(1).textValue());
          }
          ChangeEvent event = new ChangeEvent(
              UUID.fromString(f.get("event_id").textValue()), f.get("occurred_at_us").longValue(),
              f.get("actor").textValue(), f.get("actor_type").textValue(), f.get("action").textValue(),
              f.get("target").textValue(), f.get("before").textValue(), f.get("after").textValue(),
              f.get("reason").textValue(), f.get("source").textValue(), f.get("trace_id").textValue(),
              f.get("client_ip").textValue(), attributes);
          assertEquals(c.get("value_hex").textValue(), HexFormat.of().formatHex(event.encode()));
        }));
  }
}
