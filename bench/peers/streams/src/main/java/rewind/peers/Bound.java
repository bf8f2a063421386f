package rewind.peers;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * A pass stopped at its time budget. Once requested, the stream thread parks before its next
 * record and never applies another, so the stores and the applied offsets can be read at one
 * point while it waits.
 */
final class Bound {
    private volatile boolean requested;
    private final CountDownLatch parked = new CountDownLatch(1);

    void request() {
        requested = true;
    }

    /** Called by the stream thread before each record: parks it for good once a stop is requested. */
    void parkIfRequested() {
        if (!requested) {
            return;
        }
        parked.countDown();
        while (true) {
            try {
                Thread.sleep(60_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("stopped at the time budget", e);
            }
        }
    }

    /** True once the stream thread has parked (it is processing records, not restoring or idle). */
    boolean awaitParked(long millis) throws InterruptedException {
        return parked.await(millis, TimeUnit.MILLISECONDS);
    }
}
