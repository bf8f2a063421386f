package rewind.peers;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;

/**
 * Decodes rewind's wire format (docs/events.md): C3 01, the writer schema's CRC-64-AVRO
 * fingerprint (8 bytes, little-endian), then the Avro binary body, resolved into the current
 * version of the event's type. Schemas are read from rewind's schemas/ directory.
 */
final class EventDecoder {
    private static final Pattern VERSION_FILE = Pattern.compile("^v([1-9][0-9]*)\\.avsc$");

    private final Map<Long, GenericDatumReader<GenericRecord>> readers = new HashMap<>();
    private BinaryDecoder reuse;

    EventDecoder(File schemaDir) throws IOException {
        File[] types = schemaDir.listFiles(File::isDirectory);
        if (types == null) {
            throw new IOException("no schema directory " + schemaDir);
        }
        for (File type : types) {
            List<Schema> versions = new ArrayList<>();
            Map<Integer, Schema> byVersion = new HashMap<>();
            File[] files = type.listFiles();
            if (files == null) {
                continue;
            }
            for (File file : files) {
                Matcher m = VERSION_FILE.matcher(file.getName());
                if (m.matches()) {
                    Schema schema = new Schema.Parser().parse(Files.readString(file.toPath()));
                    byVersion.put(Integer.parseInt(m.group(1)), schema);
                    versions.add(schema);
                }
            }
            if (byVersion.isEmpty()) {
                continue;
            }
            Schema current = byVersion.get(byVersion.keySet().stream().max(Integer::compare).get());
            for (Schema writer : versions) {
                readers.put(SchemaNormalization.parsingFingerprint64(writer), new GenericDatumReader<>(writer, current));
            }
        }
    }

    GenericRecord decode(byte[] value) throws IOException {
        if (value.length < 10 || (value[0] & 0xff) != 0xC3 || value[1] != 0x01) {
            throw new IOException("not an Avro single-object encoded value");
        }
        long fingerprint = ByteBuffer.wrap(value, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        GenericDatumReader<GenericRecord> reader = readers.get(fingerprint);
        if (reader == null) {
            throw new IOException("unknown schema fingerprint " + Long.toHexString(fingerprint));
        }
        reuse = DecoderFactory.get().binaryDecoder(value, 10, value.length - 10, reuse);
        return reader.read(null, reuse);
    }
}
