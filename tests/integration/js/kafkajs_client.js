// kafkajs operations for tests/integration/test_kafkajs.py: `node kafkajs_client.js COMMAND JSON`.
// The JSON argument holds the brokers and the command's parameters; the result is one JSON
// document on stdout. kafkajs's own log goes to stderr (warnings and errors), which pytest shows
// when a test fails. Any failure exits 1 with the error on stderr.
'use strict';

const { Kafka, logLevel, Partitioners } = require('kafkajs');

const toStderr = () => ({ namespace, level, log }) => {
  const { message, ...extra } = log;
  process.stderr.write(`kafkajs ${level} ${namespace}: ${message} ${JSON.stringify(extra)}\n`);
};

function kafka(args) {
  return new Kafka({
    clientId: args.clientId || 'shardbroker-kafkajs-test',
    brokers: args.brokers,
    logLevel: logLevel.WARN,
    logCreator: toStderr,
    retry: { retries: 8 },
  });
}

// Create a topic, read it back, list the groups and describe them, then delete the topic.
async function admin(args) {
  const admin = kafka(args).admin();
  await admin.connect();
  try {
    const created = await admin.createTopics({
      topics: [{ topic: args.topic, numPartitions: args.partitions, replicationFactor: 1 }],
      waitForLeaders: true,
    });
    // kafkajs answers false for TOPIC_ALREADY_EXISTS.
    const createdAgain = await admin.createTopics({ topics: [{ topic: args.topic, numPartitions: args.partitions }] });
    const metadata = await admin.fetchTopicMetadata({ topics: [args.topic] });
    const { groups } = await admin.listGroups();
    const described = await admin.describeGroups(groups.map((g) => g.groupId));
    await admin.deleteTopics({ topics: [args.topic], timeout: 30000 });
    const after = await admin.listTopics();
    return {
      created,
      createdAgain,
      partitions: metadata.topics[0].partitions
        .map((p) => ({ partition: p.partitionId, leader: p.leader, error: p.partitionErrorCode }))
        .sort((a, b) => a.partition - b.partition),
      groups: groups.map((g) => ({ groupId: g.groupId, protocolType: g.protocolType })),
      described: described.groups.map((g) => ({
        groupId: g.groupId,
        state: g.state,
        protocolType: g.protocolType,
        members: g.members.length,
        errorCode: g.errorCode,
      })),
      topicsAfterDelete: after,
    };
  } finally {
    await admin.disconnect();
  }
}

// Send `count` keyed records in batches with an idempotent producer; the acknowledged offsets.
async function produce(args) {
  const producer = kafka(args).producer({
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  const acked = [];
  try {
    for (let start = 0; start < args.count; start += args.batch) {
      const messages = [];
      for (let i = start; i < Math.min(start + args.batch, args.count); i++) {
        messages.push({ key: `k${i % args.keys}`, value: `${args.tag}:${i}` });
      }
      const sent = await producer.send({ topic: args.topic, acks: -1, messages });
      for (const r of sent) {
        acked.push({ partition: r.partition, baseOffset: Number(r.baseOffset), errorCode: r.errorCode });
      }
    }
  } finally {
    await producer.disconnect();
  }
  return { acked };
}

// `members` consumers of one group subscribe; once their assignments cover every partition once
// (the group is stable: no rebalance can replay a record), `count` records are produced, read
// (each with the member that read it) and committed on leaving; the group's committed offsets.
async function group(args) {
  const client = kafka(args);
  const records = [];
  const assigned = new Map(); // member -> its latest assignment, as "partition" strings
  let stable;
  const isStable = new Promise((resolve) => {
    stable = resolve;
  });
  let allRead;
  const readAll = new Promise((resolve) => {
    allRead = resolve;
  });
  const consumers = [];
  for (let m = 0; m < args.members; m++) {
    const consumer = client.consumer({ groupId: args.group, sessionTimeout: 10000, heartbeatInterval: 500 });
    consumers.push(consumer);
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      assigned.set(m, (payload.memberAssignment[args.topic] || []).map(String));
      const all = [...assigned.values()].flat();
      if (assigned.size === args.members && all.length === args.partitions && new Set(all).size === all.length) {
        stable();
      }
    });
    await consumer.connect();
    await consumer.subscribe({ topics: [args.topic], fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        records.push({ member: m, partition, offset: Number(message.offset), value: message.value.toString() });
        if (records.length >= args.count) allRead();
      },
    });
  }
  const deadline = setTimeout(() => {
    stable();
    allRead();
  }, args.timeoutMs);
  await isStable;
  const { acked } = await produce(args);
  await readAll;
  clearTimeout(deadline);
  await Promise.all(consumers.map((c) => c.disconnect())); // commits what was read, leaves the group
  const admin = client.admin();
  await admin.connect();
  try {
    const [committed] = await admin.fetchOffsets({ groupId: args.group, topics: [args.topic] });
    return {
      acked,
      records,
      assignment: Object.fromEntries(assigned),
      committed: committed.partitions.map((p) => ({ partition: p.partition, offset: Number(p.offset) })),
    };
  } finally {
    await admin.disconnect();
  }
}

const COMMANDS = { admin, produce, group };

async function main() {
  const [command, json] = process.argv.slice(2);
  if (!COMMANDS[command]) throw new Error(`unknown command ${command}: one of ${Object.keys(COMMANDS)}`);
  const result = await COMMANDS[command](JSON.parse(json));
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`kafkajs_client: ${e.stack || e}\n`);
    process.exit(1);
  },
);
