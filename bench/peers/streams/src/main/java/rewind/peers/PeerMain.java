package rewind.peers;

import java.io.File;
import java.io.IOException;
import java.io.PrintWriter;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The Kafka Streams peer: folds rewind's events topic into RocksDB stores under exactly_once_v2,
 * until every partition has reached the log end seen at start (processed or committed), then
 * prints one "done" JSON line (wall, CPU, RSS), exports the stores as JSON (interactive queries)
 * and closes cleanly. Every line on stdout is JSON; restores are reported as they happen.
 *
 * <p>With {@code --deadline-s N} a pass not caught up N seconds after the JVM started is stopped
 * there: the stream thread parks before its next record, one "bounded" line gives the events
 * applied, wall, CPU, RSS, whether the state was being served (false while restoring) and the
 * offsets applied per partition (this run's, or the committed ones of a partition it has not
 * reached yet); the export then carries those offsets too, and the JVM halts without committing.
 *
 * <pre>java -cp 'target/classes:target/lib/*' rewind.peers.PeerMain --bootstrap H:P --topic T
 *     --app-id ID --state-dir DIR --schemas ../../../schemas --export out.json
 *     [--instance-id ID] [--threads N] [--progress-every N] [--deadline-s N]</pre>
 */
public final class PeerMain {
    private PeerMain() {}

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            args.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
        }
        String bootstrap = need(args, "bootstrap");
        String topic = need(args, "topic");
        String appId = need(args, "app-id");
        long progressEvery = Long.parseLong(args.getOrDefault("progress-every", "10000"));

        double deadline = Double.parseDouble(args.getOrDefault("deadline-s", "0"));

        Map<Integer, Long> ends = endOffsets(bootstrap, topic);
        Map<Integer, Long> committed = committedOffsets(bootstrap, appId, topic, ends);
        Set<Integer> already = new HashSet<>();
        for (Map.Entry<Integer, Long> e : ends.entrySet()) {
            if (committed.getOrDefault(e.getKey(), -1L) >= e.getValue()) {
                already.add(e.getKey());
            }
        }
        Bound bound = new Bound();
        Map<Integer, Long> processed = new ConcurrentHashMap<>();
        AtomicLong count = new AtomicLong();
        EventDecoder decoder = new EventDecoder(new File(need(args, "schemas")));

        Topology topology = new Topology();
        topology.addSource("events", Serdes.String().deserializer(), Serdes.ByteArray().deserializer(), topic);
        topology.addProcessor("fold", () -> new FoldProcessor(decoder, processed, count, progressEvery, bound), "events");
        topology.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(FoldProcessor.ORDERS), Serdes.String(), Serdes.ByteArray())
                .withCachingEnabled(), "fold");
        topology.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(FoldProcessor.FILLS), Serdes.String(), Serdes.String())
                .withCachingEnabled(), "fold");
        topology.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(FoldProcessor.POSITIONS), Serdes.String(), Serdes.ByteArray())
                .withCachingEnabled(), "fold");
        topology.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(FoldProcessor.BALANCES), Serdes.String(), Serdes.Long())
                .withCachingEnabled(), "fold");

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.STATE_DIR_CONFIG, need(args, "state-dir"));
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, args.getOrDefault("threads", "1"));
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, "1");
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        String instanceId = args.get("instance-id");
        if (instanceId != null) {
            // Static membership: a restarted instance takes its partitions back without waiting for
            // the dead member's session to expire.
            props.put(StreamsConfig.mainConsumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), instanceId);
        }

        KafkaStreams streams = new KafkaStreams(topology, props);
        streams.setGlobalStateRestoreListener(new Restores());
        streams.setUncaughtExceptionHandler(e -> {
            emit("{\"error\": " + quote(String.valueOf(e)) + "}");
            Runtime.getRuntime().halt(1);
            return null;
        });
        emit("{\"starting\": " + quote(appId) + ", \"partitions\": " + ends.size()
                + ", \"already_at_end\": " + already.size() + "}");
        streams.start();
        if (!waitCaughtUp(ends, already, processed, streams, deadline)) {
            stopAtBudget(streams, bound, ends, committed, processed, count, args.get("export"));
            return;
        }
        emit("{\"done\": true, \"processed\": " + count.get() + ", \"wall_s\": " + uptime()
                + ", \"cpu_s\": " + cpuSeconds() + ", \"rss_kb\": " + rssKb() + "}");
        String export = args.get("export");
        if (export != null) {
            export(streams, Path.of(export), null);
            emit("{\"exported\": " + quote(export) + "}");
        }
        // Leaves the group, so that the benchmark can delete it at once.
        streams.close(CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
                .withTimeout(Duration.ofSeconds(30)));
        emit("{\"closed\": true}");
    }

    private static String need(Map<String, String> args, String name) {
        String value = args.get(name);
        if (value == null) {
            System.err.println("error: --" + name + " is required");
            System.exit(2);
        }
        return value;
    }

    static synchronized void emit(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static String quote(String text) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20 || c > 0x7e) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }

    private static double uptime() {
        return ManagementFactory.getRuntimeMXBean().getUptime() / 1000.0;
    }

    private static double cpuSeconds() {
        var os = (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        return os.getProcessCpuTime() / 1e9;
    }

    private static long rssKb() throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmRSS:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        }
        return -1;
    }

    private static Map<Integer, Long> endOffsets(String bootstrap, String topic) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(props)) {
            int partitions = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().size();
            Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
            for (int p = 0; p < partitions; p++) {
                latest.put(new TopicPartition(topic, p), OffsetSpec.latest());
            }
            Map<Integer, Long> ends = new TreeMap<>();
            for (Map.Entry<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> e
                    : admin.listOffsets(latest).all().get().entrySet()) {
                ends.put(e.getKey().partition(), e.getValue().offset());
            }
            return ends;
        }
    }

    /** The offsets an earlier run committed, per partition (absent: none committed). */
    private static Map<Integer, Long> committedOffsets(String bootstrap, String appId, String topic,
            Map<Integer, Long> ends) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(props)) {
            Map<TopicPartition, OffsetAndMetadata> committed =
                    admin.listConsumerGroupOffsets(appId).partitionsToOffsetAndMetadata().get();
            Map<Integer, Long> found = new TreeMap<>();
            for (Integer partition : ends.keySet()) {
                OffsetAndMetadata c = committed.get(new TopicPartition(topic, partition));
                if (c != null) {
                    found.put(partition, c.offset());
                }
            }
            return found;
        }
    }

    /**
     * The pass at its time budget: parks the stream thread, reports what was applied, exports the
     * stores with those offsets when they are being served, and halts (no commit, no clean close).
     */
    private static void stopAtBudget(KafkaStreams streams, Bound bound, Map<Integer, Long> ends,
            Map<Integer, Long> committed, Map<Integer, Long> processed, AtomicLong count, String export)
            throws Exception {
        bound.request();
        // Not RUNNING: rebalancing or restoring, so no record is coming to park the thread on.
        boolean serving = streams.state() == KafkaStreams.State.RUNNING && bound.awaitParked(10_000)
                && streams.state() == KafkaStreams.State.RUNNING;
        StringBuilder offsets = new StringBuilder("{");
        String sep = "";
        for (Integer partition : ends.keySet()) {
            long applied = processed.getOrDefault(partition, committed.getOrDefault(partition, 0L));
            offsets.append(sep).append('"').append(partition).append("\": ").append(applied);
            sep = ", ";
        }
        offsets.append('}');
        emit("{\"bounded\": true, \"processed\": " + count.get() + ", \"wall_s\": " + uptime()
                + ", \"cpu_s\": " + cpuSeconds() + ", \"rss_kb\": " + rssKb() + ", \"serving\": " + serving
                + ", \"offsets\": " + offsets + "}");
        if (export != null && serving) {
            export(streams, Path.of(export), offsets.toString());
            emit("{\"exported\": " + quote(export) + "}");
        }
        Runtime.getRuntime().halt(0);
    }

    /**
     * Until every partition not already at its end has processed up to the end seen at start (true),
     * or the JVM has run {@code deadline} seconds (false; 0: no deadline).
     */
    private static boolean waitCaughtUp(Map<Integer, Long> ends, Set<Integer> already, Map<Integer, Long> processed,
            KafkaStreams streams, double deadline) throws InterruptedException {
        while (true) {
            if (deadline > 0 && uptime() >= deadline) {
                return false;
            }
            boolean behind = false;
            for (Map.Entry<Integer, Long> e : ends.entrySet()) {
                if (!already.contains(e.getKey()) && processed.getOrDefault(e.getKey(), 0L) < e.getValue()) {
                    behind = true;
                    break;
                }
            }
            KafkaStreams.State state = streams.state();
            if (!behind && state == KafkaStreams.State.RUNNING) {
                return true;
            }
            if (state == KafkaStreams.State.ERROR || state == KafkaStreams.State.NOT_RUNNING) {
                throw new IllegalStateException("Kafka Streams stopped: " + state);
            }
            Thread.sleep(behind ? 200 : 20);
        }
    }

    private static void export(KafkaStreams streams, Path path, String offsets) throws IOException {
        try (PrintWriter out = new PrintWriter(Files.newBufferedWriter(path, StandardCharsets.UTF_8))) {
            out.print("{\"orders\": {");
            ReadOnlyKeyValueStore<String, byte[]> orders = store(streams, FoldProcessor.ORDERS);
            String sep = "";
            try (KeyValueIterator<String, byte[]> it = orders.all()) {
                while (it.hasNext()) {
                    KeyValue<String, byte[]> kv = it.next();
                    State.Order o = State.Order.decode(kv.value);
                    out.print(sep + quote(kv.key) + ": [" + quote(o.status) + ", \"" + o.quantity + "\", \""
                            + o.filled + "\", \"" + o.filledNotional + "\"]");
                    sep = ", ";
                }
            }
            out.print("}, \"positions\": {");
            ReadOnlyKeyValueStore<String, byte[]> positions = store(streams, FoldProcessor.POSITIONS);
            sep = "";
            try (KeyValueIterator<String, byte[]> it = positions.all()) {
                while (it.hasNext()) {
                    KeyValue<String, byte[]> kv = it.next();
                    State.Position p = State.Position.decode(kv.value);
                    out.print(sep + quote(kv.key.replace('\u0000', '/')) + ": [\"" + p.quantity + "\", \""
                            + p.costBasis + "\", \"" + p.realizedPnl + "\", \"" + p.fees + "\", \""
                            + p.lastPrice + "\"]");
                    sep = ", ";
                }
            }
            out.print("}, \"balances\": {");
            ReadOnlyKeyValueStore<String, Long> balances = store(streams, FoldProcessor.BALANCES);
            sep = "";
            try (KeyValueIterator<String, Long> it = balances.all()) {
                while (it.hasNext()) {
                    KeyValue<String, Long> kv = it.next();
                    out.print(sep + quote(kv.key.replace('\u0000', '/')) + ": \"" + kv.value + "\"");
                    sep = ", ";
                }
            }
            out.print("}");
            if (offsets != null) {
                out.print(", \"offsets\": " + offsets);
            }
            out.println("}");
        }
    }

    private static <V> ReadOnlyKeyValueStore<String, V> store(KafkaStreams streams, String name) {
        return streams.store(StoreQueryParameters.fromNameAndType(name, QueryableStoreTypes.<String, V>keyValueStore()));
    }

    /** Reports every restore from a changelog: which store, from which offset, how many records. */
    private static final class Restores implements StateRestoreListener {
        private final Map<String, Long> started = new ConcurrentHashMap<>();

        @Override
        public void onRestoreStart(TopicPartition tp, String store, long startingOffset, long endingOffset) {
            started.put(tp + "/" + store, System.nanoTime());
            emit("{\"restore_start\": " + quote(tp.toString()) + ", \"store\": " + quote(store)
                    + ", \"from\": " + startingOffset + ", \"to\": " + endingOffset + "}");
        }

        @Override
        public void onBatchRestored(TopicPartition tp, String store, long batchEndOffset, long numRestored) {}

        @Override
        public void onRestoreEnd(TopicPartition tp, String store, long totalRestored) {
            Long t0 = started.get(tp + "/" + store);
            double seconds = t0 == null ? 0 : (System.nanoTime() - t0) / 1e9;
            emit("{\"restore_end\": " + quote(tp.toString()) + ", \"store\": " + quote(store)
                    + ", \"restored\": " + totalRestored + ", \"seconds\": " + seconds + "}");
        }
    }
}
