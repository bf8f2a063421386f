package rewind.peers;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigInteger;

/** The stored values and their compact binary encoding (the RocksDB stores hold these bytes). */
final class State {
    private State() {}

    static final class Order {
        String accountId;
        String symbol;
        String side;
        String orderType;
        String timeInForce;
        Long limitPrice;
        long quantity;
        long filled;
        BigInteger filledNotional;
        String status;
        String clientOrderId;
        int eventCount;
        long lastOffset;
        Long submittedLimitPrice;
        long submittedQuantity;

        byte[] encode() {
            return write(out -> {
                out.writeUTF(accountId);
                out.writeUTF(symbol);
                out.writeUTF(side);
                out.writeUTF(orderType);
                out.writeUTF(timeInForce);
                writeNullable(out, limitPrice);
                out.writeLong(quantity);
                out.writeLong(filled);
                writeBig(out, filledNotional);
                out.writeUTF(status);
                out.writeUTF(clientOrderId);
                out.writeInt(eventCount);
                out.writeLong(lastOffset);
                writeNullable(out, submittedLimitPrice);
                out.writeLong(submittedQuantity);
            });
        }

        static Order decode(byte[] bytes) {
            try {
                DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes));
                Order o = new Order();
                o.accountId = in.readUTF();
                o.symbol = in.readUTF();
                o.side = in.readUTF();
                o.orderType = in.readUTF();
                o.timeInForce = in.readUTF();
                o.limitPrice = readNullable(in);
                o.quantity = in.readLong();
                o.filled = in.readLong();
                o.filledNotional = readBig(in);
                o.status = in.readUTF();
                o.clientOrderId = in.readUTF();
                o.eventCount = in.readInt();
                o.lastOffset = in.readLong();
                o.submittedLimitPrice = readNullable(in);
                o.submittedQuantity = in.readLong();
                return o;
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }

    static final class Position {
        long quantity;
        BigInteger costBasis;
        BigInteger realizedPnl;
        long fees;
        long lastPrice;

        byte[] encode() {
            return write(out -> {
                out.writeLong(quantity);
                writeBig(out, costBasis);
                writeBig(out, realizedPnl);
                out.writeLong(fees);
                out.writeLong(lastPrice);
            });
        }

        static Position decode(byte[] bytes) {
            try {
                DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes));
                Position p = new Position();
                p.quantity = in.readLong();
                p.costBasis = readBig(in);
                p.realizedPnl = readBig(in);
                p.fees = in.readLong();
                p.lastPrice = in.readLong();
                return p;
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }

    interface Writer {
        void write(DataOutputStream out) throws IOException;
    }

    static byte[] write(Writer writer) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream(96);
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            writer.write(out);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return bytes.toByteArray();
    }

    static void writeNullable(DataOutputStream out, Long value) throws IOException {
        out.writeBoolean(value != null);
        if (value != null) {
            out.writeLong(value);
        }
    }

    static Long readNullable(DataInputStream in) throws IOException {
        return in.readBoolean() ? in.readLong() : null;
    }

    static void writeBig(DataOutputStream out, BigInteger value) throws IOException {
        byte[] raw = value.toByteArray();
        out.writeByte(raw.length);
        out.write(raw);
    }

    static BigInteger readBig(DataInputStream in) throws IOException {
        byte[] raw = new byte[in.readUnsignedByte()];
        in.readFully(raw);
        return new BigInteger(raw);
    }
}
