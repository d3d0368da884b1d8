package io.baldur.audit.producer;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.json.JsonReadFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;

/**
 * The before/after JSON text: written from a JSON value ({@link #of}), and checked against the
 * ledger's rules for it (CHAIN.md §7, rule 8) before it is sent, so the ledger never has to seal
 * the event as rejected. The producer side is stricter than the ledger where that is simpler:
 * depth counts every value (root 1), so nothing deeper than 64 is written at all.
 */
public final class JsonText {
  public static final int MAX_BYTES = 256 * 1024;
  public static final int MAX_DEPTH = 64;
  public static final int MAX_INT_DIGITS = 4300;
  static final JsonMapper MAPPER =
      JsonMapper.builder()
          .disable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS)
          .disable(JsonReadFeature.ALLOW_LEADING_DECIMAL_POINT_FOR_NUMBERS)
          .disable(JsonReadFeature.ALLOW_UNESCAPED_CONTROL_CHARS)
          .build();

  private JsonText() {}

  /** The canonical text of a JSON value (sorted keys, compact), checked. */
  public static String of(String field, JsonNode value) {
    if (value == null || value.isMissingNode()) {
      return null;
    }
    String text = PythonJson.dumps(value);
    check(field, text);
    return text;
  }

  /** Refuse text the ledger would seal as rejected; throws {@link ChangeEvent.InvalidEvent}. */
  public static void check(String field, String text) {
    if (text.getBytes(StandardCharsets.UTF_8).length > MAX_BYTES) {
      throw new ChangeEvent.InvalidEvent(field, "JSON text larger than " + MAX_BYTES + " bytes");
    }
    if (text.contains("\\u0000") || text.indexOf('\0') >= 0) {
      throw new ChangeEvent.InvalidEvent(field, "contains a NUL character, which the ledger cannot store");
    }
    try (JsonParser parser = MAPPER.createParser(text)) {
      int depth = 0;
      JsonToken token;
      int values = 0;
      while ((token = parser.nextToken()) != null) {
        if (token == JsonToken.START_ARRAY || token == JsonToken.START_OBJECT) {
          depth++;
        } else if (token == JsonToken.END_ARRAY || token == JsonToken.END_OBJECT) {
          depth--;
        }
        int valueDepth = depth + (token.isScalarValue() ? 1 : 0);
        if (valueDepth > MAX_DEPTH) {
          throw new ChangeEvent.InvalidEvent(field, "nested deeper than " + MAX_DEPTH + " levels");
        }
        if (token == JsonToken.VALUE_NUMBER_INT && parser.getText().replace("-", "").length() > MAX_INT_DIGITS) {
          throw new ChangeEvent.InvalidEvent(field, "an integer of more than " + MAX_INT_DIGITS + " digits");
        }
        if (token == JsonToken.VALUE_NUMBER_FLOAT && !Double.isFinite(parser.getDoubleValue())) {
          throw new ChangeEvent.InvalidEvent(field, "contains a number too large to store");
        }
        if (token == JsonToken.VALUE_STRING || token == JsonToken.FIELD_NAME) {
          String s = parser.getText();
          for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            boolean paired = Character.isHighSurrogate(c) && i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1));
            if (paired) {
              i++;
            } else if (Character.isSurrogate(c)) {
              throw new ChangeEvent.InvalidEvent(field, "contains an unpaired surrogate");
            }
          }
        }
        if (depth == 0) {
          values++;
        }
      }
      if (values != 1) {
        throw new ChangeEvent.InvalidEvent(field, "not valid JSON text");
      }
    } catch (IOException e) {
      throw new ChangeEvent.InvalidEvent(field, "not valid JSON text");
    }
  }
}
