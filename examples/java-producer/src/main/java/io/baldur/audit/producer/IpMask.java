package io.baldur.audit.producer;

import com.fasterxml.jackson.databind.JsonNode;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Client IP masking (docs/PRODUCERS.md, "IP masking"): IPv4 keeps two octets, IPv6 its /48,
 * an address carrying an IPv4 (mapped, 6to4) is masked as that IPv4, anything else is
 * {@code <invalid-ip>}; lists and X-Forwarded-For strings element by element, bounded to 256
 * characters. Address parsing follows Python's ipaddress module (strict dotted quads, no
 * leading zeros; RFC 4291 text for IPv6), which the vectors pin.
 */
public final class IpMask {
  public static final String INVALID_IP = "<invalid-ip>";
  public static final String TRUNCATED = "<truncated>";
  public static final int MAX_FORWARDED = 32;
  public static final int MAX_ELEMENT_CHARS = 64;
  public static final int MAX_CHARS = 256;
  private static final String SEPARATOR = ", ";
  private static final Pattern ALLOWED = Pattern.compile("[0-9A-Za-z.:%\\[\\]_-]+");
  private static final Pattern BRACKETED = Pattern.compile("\\[([^\\]]+)\\](?::([0-9]{1,5}))?");
  private static final Pattern IPV4_WITH_PORT = Pattern.compile("([0-9.]+):([0-9]{1,5})");
  private static final Pattern MASKED_IPV4 = Pattern.compile("([0-9]{1,3})\\.([0-9]{1,3})\\.\\*\\*\\*\\.\\*\\*\\*");
  private static final BigInteger LOW_80 = BigInteger.ONE.shiftLeft(80).subtract(BigInteger.ONE);

  private IpMask() {}

  /** Mask one address (with optional port, brackets, zone id); never throws. */
  public static String maskIp(String value) {
    if (value == null || value.codePointCount(0, value.length()) > MAX_ELEMENT_CHARS) {
      return INVALID_IP;
    }
    String text = strip(value);
    String masked = alreadyMasked(text);
    if (masked != null) {
      return masked;
    }
    if (text.isEmpty() || !ALLOWED.matcher(text).matches()) {
      return INVALID_IP;
    }
    String host = text;
    Matcher bracketed = BRACKETED.matcher(text);
    if (bracketed.matches()) {
      host = bracketed.group(1);
      if (!validPort(bracketed.group(2))) {
        return INVALID_IP;
      }
    } else if (text.chars().filter(c -> c == ':').count() == 1) {
      Matcher withPort = IPV4_WITH_PORT.matcher(text);
      if (!withPort.matches() || !validPort(withPort.group(2))) {
        return INVALID_IP;
      }
      host = withPort.group(1);
    }
    int zone = host.indexOf('%');
    if (zone >= 0) {
      host = host.substring(0, zone);
    }
    Long v4 = parseIpv4(host);
    if (v4 != null) {
      return maskIpv4(v4);
    }
    BigInteger v6 = parseIpv6(host);
    return v6 == null ? INVALID_IP : maskIpv6(v6);
  }

  /** Mask a client IP given as JSON: a string (one address or an X-Forwarded-For list), a
   * list, or null (which stays null). */
  public static String maskClientIp(JsonNode value) {
    if (value == null || value.isNull()) {
      return null;
    }
    List<String> parts = new ArrayList<>();
    List<Boolean> strings = new ArrayList<>();
    if (value.isTextual()) {
      for (String part : value.textValue().split(",", MAX_FORWARDED + 1)) {
        parts.add(part);
        strings.add(true);
      }
    } else if (value.isArray()) {
      for (int i = 0; i < Math.min(value.size(), MAX_FORWARDED + 1); i++) {
        JsonNode item = value.get(i);
        parts.add(item.isTextual() ? item.textValue() : null);
        strings.add(item.isTextual());
      }
    } else {
      return INVALID_IP;
    }
    boolean dropped = parts.size() > MAX_FORWARDED;
    List<String> masked = new ArrayList<>();
    for (int i = 0; i < Math.min(parts.size(), MAX_FORWARDED); i++) {
      masked.add(strings.get(i) ? maskIp(parts.get(i)) : INVALID_IP);
    }
    if (masked.isEmpty()) {
      return INVALID_IP;
    }
    return joinBounded(masked, dropped);
  }

  private static String joinBounded(List<String> masked, boolean dropped) {
    List<String> kept = new ArrayList<>();
    int length = 0;
    int reserve = SEPARATOR.length() + TRUNCATED.length();
    for (int index = 0; index < masked.size(); index++) {
      String element = masked.get(index);
      int added = element.codePointCount(0, element.length()) + (kept.isEmpty() ? 0 : SEPARATOR.length());
      boolean isLast = index == masked.size() - 1 && !dropped;
      if (length + added + (isLast ? 0 : reserve) > MAX_CHARS) {
        dropped = true;
        break;
      }
      kept.add(element);
      length += added;
    }
    if (dropped) {
      kept.add(TRUNCATED);
    }
    return String.join(SEPARATOR, kept);
  }

  private static String strip(String value) {
    int begin = 0;
    int end = value.length();
    while (begin < end && (value.charAt(begin) == ' ' || value.charAt(begin) == '\t')) {
      begin++;
    }
    while (end > begin && (value.charAt(end - 1) == ' ' || value.charAt(end - 1) == '\t')) {
      end--;
    }
    return value.substring(begin, end);
  }

  private static boolean validPort(String port) {
    if (port == null) {
      return true;
    }
    int number = Integer.parseInt(port);
    return number > 0 && number <= 65535;
  }

  private static String alreadyMasked(String text) {
    Matcher ipv4 = MASKED_IPV4.matcher(text);
    if (ipv4.matches()) {
      for (int group = 1; group <= 2; group++) {
        String octet = ipv4.group(group);
        if (Integer.parseInt(octet) > 255 || !String.valueOf(Integer.parseInt(octet)).equals(octet)) {
          return null;
        }
      }
      return text;
    }
    if (!text.endsWith("/48")) {
      return null;
    }
    String[] pieces = text.split("/", -1);
    if (pieces.length != 2) {
      return null;
    }
    String address = pieces[0];
    String scope = null;
    int percent = address.indexOf('%');
    if (percent >= 0) {
      scope = address.substring(percent + 1);
      address = address.substring(0, percent);
      if (scope.isEmpty() || scope.indexOf('%') >= 0) {
        return null;
      }
    }
    BigInteger network = parseIpv6(address);
    if (network == null || network.and(LOW_80).signum() != 0) {
      return null;
    }
    if (network.shiftRight(112).intValue() == 0x2002) {
      return maskIpv4(network.shiftRight(80).longValue() & 0xFFFFFFFFL);
    }
    return compressed(network) + (scope == null ? "" : "%" + scope) + "/48";
  }

  private static String maskIpv4(long address) {
    return (address >> 24 & 0xFF) + "." + (address >> 16 & 0xFF) + ".***.***";
  }

  private static String maskIpv6(BigInteger address) {
    if (address.shiftRight(32).equals(BigInteger.valueOf(0xFFFF))) {
      return maskIpv4(address.longValue() & 0xFFFFFFFFL);
    }
    if (address.shiftRight(112).intValue() == 0x2002) {
      return maskIpv4(address.shiftRight(80).longValue() & 0xFFFFFFFFL);
    }
    return compressed(address.shiftRight(80).shiftLeft(80)) + "/48";
  }

  /** A dotted quad as Python's IPv4Address reads it, or null. */
  static Long parseIpv4(String text) {
    if (text.isEmpty()) {
      return null;
    }
    String[] octets = text.split("\\.", -1);
    if (octets.length != 4) {
      return null;
    }
    long value = 0;
    for (String octet : octets) {
      if (octet.isEmpty() || octet.length() > 3 || !octet.chars().allMatch(c -> c >= '0' && c <= '9')) {
        return null;
      }
      if (!octet.equals("0") && octet.charAt(0) == '0') {
        return null;
      }
      int number = Integer.parseInt(octet);
      if (number > 255) {
        return null;
      }
      value = value << 8 | number;
    }
    return value;
  }

  private static Integer hextet(String text) {
    if (text.isEmpty() || text.length() > 4) {
      return null;
    }
    for (int i = 0; i < text.length(); i++) {
      if ("0123456789abcdefABCDEF".indexOf(text.charAt(i)) < 0) {
        return null;
      }
    }
    return Integer.parseInt(text, 16);
  }

  /** An IPv6 address (no zone id) as Python's IPv6Address reads it, or null. */
  static BigInteger parseIpv6(String text) {
    if (text.isEmpty()) {
      return null;
    }
    List<String> parts = new ArrayList<>(List.of(text.split(":", -1)));
    if (parts.size() < 3) {
      return null;
    }
    if (parts.get(parts.size() - 1).contains(".")) {
      Long v4 = parseIpv4(parts.remove(parts.size() - 1));
      if (v4 == null) {
        return null;
      }
      parts.add(Long.toHexString(v4 >> 16 & 0xFFFF));
      parts.add(Long.toHexString(v4 & 0xFFFF));
    }
    if (parts.size() > 9) {
      return null;
    }
    int skip = -1;
    for (int i = 1; i < parts.size() - 1; i++) {
      if (parts.get(i).isEmpty()) {
        if (skip >= 0) {
          return null;
        }
        skip = i;
      }
    }
    int hi;
    int lo;
    int skipped;
    if (skip >= 0) {
      hi = skip;
      lo = parts.size() - skip - 1;
      if (parts.get(0).isEmpty() && --hi != 0) {
        return null;
      }
      if (parts.get(parts.size() - 1).isEmpty() && --lo != 0) {
        return null;
      }
      skipped = 8 - (hi + lo);
      if (skipped < 1) {
        return null;
      }
    } else {
      if (parts.size() != 8 || parts.get(0).isEmpty() || parts.get(7).isEmpty()) {
        return null;
      }
      hi = 8;
      lo = 0;
      skipped = 0;
    }
    BigInteger value = BigInteger.ZERO;
    for (int i = 0; i < hi; i++) {
      Integer group = hextet(parts.get(i));
      if (group == null) {
        return null;
      }
      value = value.shiftLeft(16).or(BigInteger.valueOf(group));
    }
    value = value.shiftLeft(16 * skipped);
    for (int i = parts.size() - lo; i < parts.size(); i++) {
      Integer group = hextet(parts.get(i));
      if (group == null) {
        return null;
      }
      value = value.shiftLeft(16).or(BigInteger.valueOf(group));
    }
    return value;
  }

  /** RFC 5952 text: lower case, no leading zeros, the first longest run of 2+ zero groups as ::. */
  static String compressed(BigInteger address) {
    String[] groups = new String[8];
    for (int i = 0; i < 8; i++) {
      groups[i] = Integer.toHexString(address.shiftRight(16 * (7 - i)).intValue() & 0xFFFF);
    }
    int bestStart = -1;
    int bestLength = 0;
    int start = -1;
    int length = 0;
    for (int i = 0; i < 8; i++) {
      if (groups[i].equals("0")) {
        length++;
        if (start == -1) {
          start = i;
        }
        if (length > bestLength) {
          bestLength = length;
          bestStart = start;
        }
      } else {
        length = 0;
        start = -1;
      }
    }
    if (bestLength <= 1) {
      return String.join(":", groups);
    }
    String head = String.join(":", java.util.Arrays.copyOfRange(groups, 0, bestStart));
    String tail = String.join(":", java.util.Arrays.copyOfRange(groups, bestStart + bestLength, 8));
    return head + "::" + tail;
  }
}
