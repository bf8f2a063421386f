package rewind.peers;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.RoundingMode;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * rewind's fold (projector/fold.py, docs/state.md) for orders, fills, positions and balances, one
 * event at a time into RocksDB stores. An event that cannot apply (unknown order, terminal order,
 * invalid transition, overfill, invalid replace, duplicate or conflicting fill or order) changes
 * nothing, as in rewind; unlike rewind it is not recorded. Not kept: risk, anomalies, the event-id
 * window and rewind's field-value checks.
 */
final class FoldProcessor implements Processor<String, byte[], Void, Void> {
    static final String ORDERS = "orders";
    static final String FILLS = "fills";
    static final String POSITIONS = "positions";
    static final String BALANCES = "balances";

    private static final Set<String> OPEN = Set.of("NEW", "ACCEPTED", "PARTIALLY_FILLED");
    private static final Set<String> TERMINAL = Set.of("FILLED", "CANCELED", "REJECTED", "EXPIRED");
    private static final Set<String> NEW_ONLY = Set.of("NEW");
    private static final Set<String> NEW_OR_ACCEPTED = Set.of("NEW", "ACCEPTED");

    private final EventDecoder decoder;
    private final Map<Integer, Long> processed;
    private final AtomicLong count;
    private final long progressEvery;
    private final Bound bound;
    private ProcessorContext<Void, Void> context;
    private KeyValueStore<String, byte[]> orders;
    private KeyValueStore<String, String> fills;
    private KeyValueStore<String, byte[]> positions;
    private KeyValueStore<String, Long> balances;

    FoldProcessor(EventDecoder decoder, Map<Integer, Long> processed, AtomicLong count, long progressEvery,
            Bound bound) {
        this.decoder = decoder;
        this.bound = bound;
        this.processed = processed;
        this.count = count;
        this.progressEvery = progressEvery;
    }

    @Override
    public void init(ProcessorContext<Void, Void> context) {
        this.context = context;
        orders = context.getStateStore(ORDERS);
        fills = context.getStateStore(FILLS);
        positions = context.getStateStore(POSITIONS);
        balances = context.getStateStore(BALANCES);
    }

    @Override
    public void process(Record<String, byte[]> record) {
        bound.parkIfRequested();
        RecordMetadata meta = context.recordMetadata().orElseThrow();
        GenericRecord event;
        try {
            event = decoder.decode(record.value());
        } catch (IOException e) {
            throw new UncheckedIOException("partition " + meta.partition() + " offset " + meta.offset(), e);
        }
        long offset = meta.offset();
        switch (str(event, "event_type")) {
            case "OrderSubmitted" -> submitted(event, offset);
            case "OrderAccepted" -> transition(event, offset, NEW_ONLY, "ACCEPTED");
            case "OrderRejected" -> transition(event, offset, NEW_OR_ACCEPTED, "REJECTED");
            case "OrderCanceled" -> transition(event, offset, OPEN, "CANCELED");
            case "OrderExpired" -> transition(event, offset, OPEN, "EXPIRED");
            case "OrderReplaced" -> replaced(event, offset);
            case "Fill" -> fill(event, offset);
            case "PositionAdjusted" -> adjusted(event);
            case "BalanceChanged" -> balanceChanged(event);
            default -> throw new IllegalStateException("unknown event_type at offset " + offset);
        }
        processed.put(meta.partition(), offset + 1);
        long n = count.incrementAndGet();
        if (n % progressEvery == 0) {
            System.out.println("{\"progress\": " + n + "}");
            System.out.flush();
        }
    }

    private static String str(GenericRecord event, String field) {
        Object value = event.get(field);
        return value == null ? null : value.toString();
    }

    private static Long num(GenericRecord event, String field) {
        return (Long) event.get(field);
    }

    private void submitted(GenericRecord e, long offset) {
        String orderId = str(e, "order_id");
        byte[] existing = orders.get(orderId);
        if (existing != null) {
            return; // DUPLICATE_ORDER or ORDER_ID_CONFLICT: nothing changes
        }
        State.Order o = new State.Order();
        o.accountId = str(e, "account_id");
        o.symbol = str(e, "symbol");
        o.side = str(e, "side");
        o.orderType = str(e, "order_type");
        o.timeInForce = str(e, "time_in_force");
        o.limitPrice = num(e, "limit_price");
        o.quantity = num(e, "quantity");
        o.filled = 0;
        o.filledNotional = BigInteger.ZERO;
        o.status = "NEW";
        o.clientOrderId = str(e, "client_order_id");
        o.eventCount = 1;
        o.lastOffset = offset;
        o.submittedLimitPrice = o.limitPrice;
        o.submittedQuantity = o.quantity;
        orders.put(orderId, o.encode());
    }

    /** The live order the event refers to, or null when the event cannot apply. */
    private State.Order openOrder(GenericRecord e, String orderId) {
        byte[] raw = orders.get(orderId);
        if (raw == null) {
            return null; // UNKNOWN_ORDER
        }
        State.Order o = State.Order.decode(raw);
        if (!o.accountId.equals(str(e, "account_id")) || TERMINAL.contains(o.status)) {
            return null; // ACCOUNT_MISMATCH, TERMINAL_ORDER
        }
        return o;
    }

    private void transition(GenericRecord e, long offset, Set<String> allowed, String target) {
        String orderId = str(e, "order_id");
        State.Order o = openOrder(e, orderId);
        if (o == null || !allowed.contains(o.status)) {
            return;
        }
        o.status = target;
        o.eventCount += 1;
        o.lastOffset = offset;
        orders.put(orderId, o.encode());
    }

    private void replaced(GenericRecord e, long offset) {
        String orderId = str(e, "order_id");
        Long newLimit = num(e, "new_limit_price");
        Long newQuantity = num(e, "new_quantity");
        State.Order o = openOrder(e, orderId);
        if (o == null || (newLimit != null && o.limitPrice == null)) {
            return;
        }
        long quantity = newQuantity == null ? o.quantity : newQuantity;
        if (quantity < o.filled) {
            return; // INVALID_REPLACE
        }
        o.quantity = quantity;
        if (newLimit != null) {
            o.limitPrice = newLimit;
        }
        if (quantity == o.filled) {
            o.status = "FILLED";
        }
        o.eventCount += 1;
        o.lastOffset = offset;
        orders.put(orderId, o.encode());
    }

    private void fill(GenericRecord e, long offset) {
        String execId = str(e, "exec_id");
        String orderId = str(e, "order_id");
        long quantity = num(e, "quantity");
        long price = num(e, "price");
        long fee = num(e, "fee");
        if (fills.get(execId) != null) {
            return; // DUPLICATE_FILL or EXEC_ID_CONFLICT
        }
        State.Order o = openOrder(e, orderId);
        if (o == null) {
            return;
        }
        long filled = o.filled + quantity;
        if (filled > o.quantity) {
            return; // OVERFILL
        }
        String key = o.accountId + "\u0000" + o.symbol;
        long traded = o.side.equals("BUY") ? quantity : -quantity;
        byte[] raw = positions.get(key);
        State.Position p;
        if (raw == null) {
            p = new State.Position();
            p.quantity = traded;
            p.costBasis = BigInteger.valueOf(traded).multiply(BigInteger.valueOf(price));
            p.realizedPnl = BigInteger.ZERO;
            p.fees = fee;
        } else {
            p = State.Position.decode(raw);
            trade(p, traded, price);
            p.fees += fee;
        }
        p.lastPrice = price;
        positions.put(key, p.encode());
        o.filled = filled;
        o.filledNotional = o.filledNotional.add(BigInteger.valueOf(quantity).multiply(BigInteger.valueOf(price)));
        o.status = filled == o.quantity ? "FILLED" : "PARTIALLY_FILLED";
        o.eventCount += 1;
        o.lastOffset = offset;
        orders.put(orderId, o.encode());
        fills.put(execId, orderId);
    }

    private void adjusted(GenericRecord e) {
        String key = str(e, "account_id") + "\u0000" + str(e, "symbol");
        long quantity = num(e, "quantity");
        long price = num(e, "price");
        byte[] raw = positions.get(key);
        State.Position p;
        if (raw == null) {
            p = new State.Position();
            p.realizedPnl = BigInteger.ZERO;
            p.fees = 0;
        } else {
            p = State.Position.decode(raw);
        }
        if (raw == null || str(e, "mode").equals("SET")) {
            p.quantity = quantity;
            p.costBasis = BigInteger.valueOf(quantity).multiply(BigInteger.valueOf(price));
        } else {
            trade(p, quantity, price);
        }
        p.lastPrice = price;
        positions.put(key, p.encode());
    }

    private void balanceChanged(GenericRecord e) {
        String key = str(e, "account_id") + "\u0000" + str(e, "currency");
        Long amount = balances.get(key);
        balances.put(key, (amount == null ? 0L : amount) + num(e, "amount"));
    }

    /** docs/state.md "Positions": trade {@code traded} (signed, scale 8) at {@code price}. */
    static void trade(State.Position p, long traded, long price) {
        long q = p.quantity;
        BigInteger px = BigInteger.valueOf(price);
        if (q == 0 || (q > 0) == (traded > 0)) {
            p.quantity = q + traded;
            p.costBasis = p.costBasis.add(BigInteger.valueOf(traded).multiply(px));
            return;
        }
        long held = Math.abs(q);
        long size = Math.abs(traded);
        long closed = Math.min(size, held);
        BigInteger removed = new BigDecimal(p.costBasis.multiply(BigInteger.valueOf(closed)))
                .divide(BigDecimal.valueOf(held), 0, RoundingMode.HALF_EVEN)
                .toBigIntegerExact();
        BigInteger gain = BigInteger.valueOf(closed).multiply(px);
        p.realizedPnl = p.realizedPnl.add(q > 0 ? gain : gain.negate()).subtract(removed);
        p.costBasis = p.costBasis.subtract(removed);
        if (size > closed) {
            if (p.costBasis.signum() != 0) {
                throw new IllegalStateException("closing " + held + " left cost basis " + p.costBasis);
            }
            long rest = q > 0 ? traded + closed : traded - closed;
            p.quantity = rest;
            p.costBasis = BigInteger.valueOf(rest).multiply(px);
            return;
        }
        p.quantity = q + (traded > 0 ? closed : -closed);
    }
}
