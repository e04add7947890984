// AlertConsumer: reads this bank's risk alerts (风险预警) from Yurong's Kafka topic and prints
// each one as a line of JSON on standard output.
//
//   java -cp 'lib/*:.' AlertConsumer client.properties alert.avsc <topic> [maxRecords] [timeoutSeconds]
//
//   client.properties  Kafka consumer settings from the bundle (servers, SASL_SSL login, group.id)
//   alert.avsc         the Avro schema the alerts are written with
//   topic              alerts.<bank_id>, as in topic.txt
//   maxRecords         stop after this many alerts (default, or 0: run until stopped with Ctrl-C)
//   timeoutSeconds     give up when maxRecords alerts have not arrived after this many seconds
//
// Exit codes: 0 done (maxRecords printed, or stopped with Ctrl-C), 1 error, 2 timed out, 64 bad usage.
// Messages and errors go to standard error; standard output has only the alerts.
//
// Each Kafka message: key = the enterprise's USCC (统一社会信用代码) as UTF-8 text; value = one
// Avro "single-object encoding" message: bytes C3 01, the 8-byte fingerprint of the schema it
// was written with, then the Avro binary record. BinaryMessageDecoder checks both and decodes.
// Offsets are committed only after an alert is printed, so an alert is never skipped: after a
// crash the last few may be printed again. alert_id identifies an alert, also on replay.

import java.io.File;
import java.io.FileInputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class AlertConsumer {

    public static void main(String[] args) throws Exception {
        if (args.length < 3 || args.length > 5) {
            System.err.println("usage: java AlertConsumer client.properties alert.avsc <topic> [maxRecords] [timeoutSeconds]");
            System.exit(64);
        }
        // The Kafka client's own log lines go to stderr; only warnings and errors.
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel",
                System.getProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn"));
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");

        String topic = args[2];
        long maxRecords = args.length > 3 ? Long.parseLong(args[3]) : 0;
        long timeoutMs = args.length > 4 ? Long.parseLong(args[4]) * 1000 : 0;

        Properties props = new Properties();
        try (Reader in = new InputStreamReader(new FileInputStream(args[0]), StandardCharsets.UTF_8)) {
            props.load(in);
        }
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        // This program commits each alert's offset itself, after printing it (see below).
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");

        // The writer schema. If Yurong ever changes the schema, the bundle gets the new alert.avsc;
        // decoder.addSchema(oldSchema) would let this program read alerts written with an older one.
        Schema schema = new Schema.Parser().parse(new File(args[1]));
        BinaryMessageDecoder<GenericRecord> decoder = new BinaryMessageDecoder<>(GenericData.get(), schema);

        // UTF-8 whatever the machine's locale: alerts carry Chinese text.
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);

        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props);
        // Ctrl-C: wake the consumer up, let main commit and close it, then exit.
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            if (closed.getCount() > 0) {
                consumer.wakeup();
                try {
                    closed.await(10, TimeUnit.SECONDS);
                } catch (InterruptedException ignored) {
                    // exiting anyway
                }
            }
        }));

        int exitCode = 0;
        long printed = 0;
        long deadline = timeoutMs > 0 ? System.currentTimeMillis() + timeoutMs : Long.MAX_VALUE;
        Map<TopicPartition, OffsetAndMetadata> done = new HashMap<>();
        try {
            consumer.subscribe(List.of(topic));
            loop:
            while (maxRecords <= 0 || printed < maxRecords) {
                if (System.currentTimeMillis() >= deadline) {
                    System.err.printf("timed out: %d of %d alerts after %d s%n", printed, maxRecords, timeoutMs / 1000);
                    exitCode = 2;
                    break;
                }
                for (ConsumerRecord<byte[], byte[]> rec : consumer.poll(Duration.ofMillis(500))) {
                    GenericRecord alert;
                    try {
                        alert = decoder.decode(rec.value());
                    } catch (Exception e) {
                        // Not committed: after the cause is fixed (e.g. a newer alert.avsc), a
                        // rerun starts again at this message.
                        System.err.printf("cannot decode %s-%d@%d: %s%n",
                                rec.topic(), rec.partition(), rec.offset(), e);
                        exitCode = 1;
                        break loop;
                    }
                    out.println(alert);  // Avro renders a GenericRecord as one line of JSON
                    done.put(new TopicPartition(rec.topic(), rec.partition()), new OffsetAndMetadata(rec.offset() + 1));
                    printed++;
                    if (maxRecords > 0 && printed >= maxRecords) {
                        break loop;
                    }
                }
                commit(consumer, done);
            }
        } catch (WakeupException e) {
            // Ctrl-C: commit what was printed, then stop
        } catch (Exception e) {
            System.err.println("error: " + e);
            exitCode = 1;
        } finally {
            try {
                commit(consumer, done);
            } catch (Exception e) {
                System.err.println("could not commit offsets: " + e);
                exitCode = 1;
            }
            consumer.close();
            closed.countDown();
        }
        out.flush();
        System.exit(exitCode);
    }

    /** Commit the offsets after the printed alerts (synchronously: the broker has them on return). */
    private static void commit(KafkaConsumer<byte[], byte[]> consumer, Map<TopicPartition, OffsetAndMetadata> done) {
        if (!done.isEmpty()) {
            consumer.commitSync(done);
            done.clear();
        }
    }
}
