// SPDX-License-Identifier: Apache-2.0
//
// moat's per-sandbox socket rules, attached to the sandbox's cgroup (v2):
//   cgroup/sock_create         protocol rules (tcp, udp, icmp, icmpv6, raw)
//   cgroup/connect4, connect6  address rules (CIDR, port range, protocol)
//   cgroup/sendmsg4, sendmsg6  the same for datagrams sent with an address
// Every decision a rule names (Block, Audit) and every default-posture denial is
// reported through the ring buffer; a full ring buffer is counted, never silent.
//
// The tables are filled by user space before attachment (crates/bpf/src/lib.rs) and
// compiled from the policies by moat-policy (sockrules.rs):
//   ranges: per address family, sorted disjoint address ranges, in each of which one
//           rule network is the narrowest covering it; a binary search finds the
//           destination's range (none: no rule names it), which selects a run of
//           `segments`
//   segments: the ports where the rules of that network (and of every network covering
//             it) apply, cut where they start and end, each with the merged verdict per
//             protocol kind, so a second binary search finds a destination's verdict (a
//             port no segment holds has no rule)
//   protocols: one verdict per protocol class
//   settings: allow-list modes

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define SOCK_RAW 3
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58

// Bits of an entry's `action`, and of the verdict accumulated over the matches.
#define ACTION_ALLOW 1
#define ACTION_AUDIT 2
#define ACTION_BLOCK 4

// Protocol classes (index into `protocols`).
#define CLASS_TCP 0
#define CLASS_UDP 1
#define CLASS_ICMP 2
#define CLASS_ICMPV6 3
#define CLASS_RAW 4
#define CLASSES 5

// What the process did.
#define OP_SOCKET 1
#define OP_CONNECT 2
#define OP_SENDMSG 3

// No rule: the decision is the default posture's.
#define RULE_POSTURE 0xffffffff

// Addresses lo..hi, as numbers in two 64-bit halves (an IPv4 address is its 32-bit
// value), and the run of segments that applies there.
struct range {
	__u64 lo_high;
	__u64 lo_low;
	__u64 hi_high;
	__u64 hi_low;
	__u32 first;
	__u32 count;
};

// Ranges in a family: at most 2^32, so 32 halvings find any of them.
#define RANGE_SEARCH_STEPS 32

// Protocol kinds of a segment's verdicts.
#define KIND_TCP 0
#define KIND_UDP 1
#define KIND_OTHER 2

struct verdict {
	__u8 action; // ACTION_* bits of every rule that applies
	__u8 pad[3];
	__u32 block_rule;
	__u32 audit_rule;
};

struct segment {
	__u16 port_lo;
	__u16 port_hi;
	struct verdict verdicts[3];
};

// Segments in a run: at most 65,536 ports, so 17 halvings find any of them.
#define SEARCH_STEPS 17

struct protocol_verdict {
	__u32 action;
	__u32 rule;
};

struct settings {
	__u32 address_allow_list;
	__u32 protocol_allow_list;
	__u32 report; // 0: nobody reads events (no --alerts)
	// The sandbox's init, which configures its interfaces with inet ioctl sockets
	// before the workload exists; it runs moat's code only (no ptrace into it).
	__u32 exempt_tgid;
	__u32 posture_audit; // what the allow lists do not name: let through, reported
	__u32 v4_ranges; // ranges[0, v4_ranges) are IPv4's,
	__u32 v6_ranges; // then come IPv6's
	__u32 pad;
	// The sandbox's pid namespace (kernel dev_t and inode): the exemption is pid 1 there,
	// and events carry the sandbox's own pids, wherever moat itself runs.
	__u64 pidns_dev;
	__u64 pidns_ino;
};

struct event {
	__u64 pid_tgid; // on the host
	__u64 uid_gid;
	__u32 rule;
	__u8 op;
	__u8 denied;
	__u8 family;
	__u8 type;
	__u16 protocol;
	__u16 port;
	__u8 addr[16]; // a 128-bit number, network order: an IPv4 address is the last 4 bytes
	char comm[16];
	__u8 addr_len; // 4 or 16 (0 for sockets)
	__u32 sandbox_tgid; // in the sandbox's pid namespace; 0 if not in it
};

// The large tables are filled through a mapping of their memory (mapped.rs).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct range);
	__uint(max_entries, 1);
} ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct segment);
	__uint(max_entries, 1);
} segments SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct protocol_verdict);
	__uint(max_entries, CLASSES);
} protocols SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct settings);
	__uint(max_entries, 1);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

// Events the ring buffer had no room for, per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} lost SEC(".maps");

static __always_inline struct settings *get_settings(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&settings, &zero);
}

// The current process's pid in the sandbox's pid namespace (0 when it is not there).
static __always_inline __u32 sandbox_tgid(struct settings *s)
{
	struct bpf_pidns_info ns = {};
	if (!s->pidns_ino ||
	    bpf_get_ns_current_pid_tgid(s->pidns_dev, s->pidns_ino, &ns, sizeof(ns)))
		return 0;
	return ns.tgid;
}

// What an event says about the operation.
struct operation {
	__u64 addr_high; // the destination, as ranges hold it (connect, sendmsg)
	__u64 addr_low;
	__u16 protocol;
	__u16 port;
	__u8 op;
	__u8 family;
	__u8 type;
	__u8 addr_len; // 4 or 16; 0 for sockets
};

// Sends an event about `what`, decided by `rule`. Each program calls it from one place
// only, so the verifier goes through it once.
static __always_inline void report(struct settings *s, const struct operation *what,
				   __u32 rule, int denied)
{
	if (!s->report)
		return;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *count = bpf_map_lookup_elem(&lost, &zero);
		if (count)
			*count += 1;
		return;
	}
	e->pid_tgid = bpf_get_current_pid_tgid();
	e->sandbox_tgid = sandbox_tgid(s);
	e->uid_gid = bpf_get_current_uid_gid();
	e->rule = rule;
	e->op = what->op;
	e->denied = denied;
	e->family = what->family;
	e->type = what->type;
	e->protocol = what->protocol;
	e->port = what->port;
	e->addr_len = what->addr_len;
	// The address as a 128-bit number in network byte order (an IPv4 address in the
	// last four bytes), without a branch on its kind, which would double the states
	// the verifier keeps.
	__u32 words[4] = {
		bpf_htonl(what->addr_high >> 32),
		bpf_htonl(what->addr_high),
		bpf_htonl(what->addr_low >> 32),
		bpf_htonl(what->addr_low),
	};
	__builtin_memcpy(e->addr, words, 16);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
}

// What the rules say, given the ACTION_* bits that apply and whether the kind of thing
// is in allow-list mode: 1 lets the operation through, 0 refuses it (EPERM). Every
// decision a rule names, and every posture decision, is reported.
static __always_inline int judge(struct settings *s, const struct operation *what,
				 __u8 action, __u32 block_rule, __u32 audit_rule,
				 __u32 allow_list)
{
	__u32 rule;
	int denied;
	if (action & ACTION_BLOCK) {
		rule = block_rule;
		denied = 1;
	} else if (allow_list && !(action & ACTION_ALLOW)) {
		rule = RULE_POSTURE;
		denied = !s->posture_audit;
	} else if (action & ACTION_AUDIT) {
		rule = audit_rule;
		denied = 0;
	} else {
		return 1;
	}
	report(s, what, rule, denied);
	return !denied;
}

struct address_search {
	__u64 high; // the destination, as ranges hold it
	__u64 low;
	__u32 lo; // the ranges still possible: [lo, hi)
	__u32 hi;
	__u32 found; // index + 1, 0 while not found
};

// a < b, for addresses in two halves.
static __always_inline int address_before(__u64 a_high, __u64 a_low, __u64 b_high,
					  __u64 b_low)
{
	return a_high < b_high || (a_high == b_high && a_low < b_low);
}

// One halving of a binary search for the range holding an address.
static long address_step(__u64 index, void *data)
{
	struct address_search *search = data;
	if (search->lo >= search->hi)
		return 1;
	__u32 mid = search->lo + (search->hi - search->lo) / 2;
	struct range *range = bpf_map_lookup_elem(&ranges, &mid);
	if (!range)
		return 1;
	if (address_before(search->high, search->low, range->lo_high, range->lo_low)) {
		search->hi = mid;
	} else if (address_before(range->hi_high, range->hi_low, search->high, search->low)) {
		search->lo = mid + 1;
	} else {
		search->found = mid + 1;
		return 1;
	}
	return 0;
}

// The range among ranges[first, first + count) that holds the address, or NULL (no rule
// names it).
static __always_inline struct range *find_range(__u32 first, __u32 count, __u64 high,
						__u64 low)
{
	struct address_search search = {
		.high = high,
		.low = low,
		.lo = first,
		.hi = first + count,
	};
	if (search.hi < search.lo)
		return NULL;
	bpf_loop(RANGE_SEARCH_STEPS, address_step, &search, 0);
	if (!search.found)
		return NULL;
	__u32 key = search.found - 1;
	return bpf_map_lookup_elem(&ranges, &key);
}

struct search {
	__u32 first;
	__u32 lo;
	__u32 hi;
	__u16 port;
	__u32 found; // index + 1, 0 while not found
};

// One halving of a binary search for the segment holding `port`. A callback of bpf_loop
// is verified once, where an open-coded loop would be verified step by step.
static long search_step(__u64 index, void *data)
{
	struct search *search = data;
	if (search->lo >= search->hi)
		return 1;
	__u32 mid = search->lo + (search->hi - search->lo) / 2;
	__u32 key = search->first + mid;
	struct segment *segment = bpf_map_lookup_elem(&segments, &key);
	if (!segment)
		return 1;
	if (search->port < segment->port_lo) {
		search->hi = mid;
	} else if (search->port > segment->port_hi) {
		search->lo = mid + 1;
	} else {
		search->found = key + 1;
		return 1;
	}
	return 0;
}

// The segment of a range's run that holds `port`, or NULL (no rule names the port).
static __always_inline struct segment *find_segment(struct range *range, __u16 port)
{
	struct search search = {
		.first = range->first,
		.lo = 0,
		.hi = range->count,
		.port = port,
	};
	bpf_loop(SEARCH_STEPS, search_step, &search, 0);
	if (!search.found)
		return NULL;
	__u32 key = search.found - 1;
	return bpf_map_lookup_elem(&segments, &key);
}

// The verdict on a connection or datagram to the address in `what`, whose range (if
// any) is `range`.
static __always_inline int decide(struct bpf_sock_addr *ctx, struct settings *s,
				  struct operation *what, struct range *range)
{
	what->port = bpf_ntohs((__u16)ctx->user_port);
	what->protocol = (__u8)ctx->protocol;
	what->family = (__u8)ctx->user_family;
	what->type = (__u8)ctx->type;
	struct verdict none = {};
	struct verdict *v = &none;
	struct segment *segment = range ? find_segment(range, what->port) : NULL;
	if (segment) {
		if (what->protocol == IPPROTO_TCP)
			v = &segment->verdicts[KIND_TCP];
		else if (what->protocol == IPPROTO_UDP)
			v = &segment->verdicts[KIND_UDP];
		else
			v = &segment->verdicts[KIND_OTHER];
	}
	return judge(s, what, v->action, v->block_rule, v->audit_rule, s->address_allow_list);
}

// The unspecified address (0.0.0.0, ::) is a connection to the local host: the kernel
// rewrites it to loopback after this hook, so it is checked as loopback.
static __always_inline int check_v4(struct bpf_sock_addr *ctx, __u8 op)
{
	struct settings *s = get_settings();
	if (!s)
		return 0;
	if (ctx->user_ip4 == 0)
		ctx->user_ip4 = bpf_htonl(0x7f000001); // what is checked is what is used
	struct operation what = {
		.op = op,
		.addr_low = bpf_ntohl(ctx->user_ip4),
		.addr_len = 4,
	};
	struct range *range = find_range(0, s->v4_ranges, 0, what.addr_low);
	return decide(ctx, s, &what, range);
}

static __always_inline int check_v6(struct bpf_sock_addr *ctx, __u8 op)
{
	struct settings *s = get_settings();
	if (!s)
		return 0;
	__u32 words[4];
	words[0] = ctx->user_ip6[0];
	words[1] = ctx->user_ip6[1];
	words[2] = ctx->user_ip6[2];
	words[3] = ctx->user_ip6[3];
	struct operation what = { .op = op, .addr_len = 16 };
	// One search and one decision for both kinds of address: the verifier goes through
	// the program once, not once per kind.
	__u32 first = s->v4_ranges, count = s->v6_ranges;
	if (words[0] == 0 && words[1] == 0 && words[2] == bpf_htonl(0x0000ffff)) {
		// An IPv4-mapped address (::ffff:a.b.c.d) reaches an IPv4 host: the IPv4
		// rules apply, and 0.0.0.0 is loopback as for IPv4.
		if (words[3] == 0) {
			words[3] = bpf_htonl(0x7f000001);
			ctx->user_ip6[3] = words[3];
		}
		first = 0;
		count = s->v4_ranges;
		what.addr_len = 4;
		words[2] = 0;
	} else if (words[0] == 0 && words[1] == 0 && words[2] == 0 && words[3] == 0) {
		words[3] = bpf_htonl(1);
		ctx->user_ip6[3] = words[3];
	}
	what.addr_high = ((__u64)bpf_ntohl(words[0]) << 32) | bpf_ntohl(words[1]);
	what.addr_low = ((__u64)bpf_ntohl(words[2]) << 32) | bpf_ntohl(words[3]);
	struct range *range = find_range(first, count, what.addr_high, what.addr_low);
	return decide(ctx, s, &what, range);
}

SEC("cgroup/connect4")
int moat_connect4(struct bpf_sock_addr *ctx)
{
	return check_v4(ctx, OP_CONNECT);
}

SEC("cgroup/connect6")
int moat_connect6(struct bpf_sock_addr *ctx)
{
	return check_v6(ctx, OP_CONNECT);
}

SEC("cgroup/sendmsg4")
int moat_sendmsg4(struct bpf_sock_addr *ctx)
{
	return check_v4(ctx, OP_SENDMSG);
}

SEC("cgroup/sendmsg6")
int moat_sendmsg6(struct bpf_sock_addr *ctx)
{
	return check_v6(ctx, OP_SENDMSG);
}

SEC("cgroup/sock_create")
int moat_sock_create(struct bpf_sock *ctx)
{
	__u32 family = ctx->family;
	if (family != AF_INET && family != AF_INET6)
		return 1;
	__u32 class;
	if (ctx->type == SOCK_RAW)
		class = CLASS_RAW;
	else if (ctx->protocol == IPPROTO_TCP)
		class = CLASS_TCP;
	else if (ctx->protocol == IPPROTO_UDP)
		class = CLASS_UDP;
	else if (ctx->protocol == IPPROTO_ICMP)
		class = CLASS_ICMP;
	else if (ctx->protocol == IPPROTO_ICMPV6)
		class = CLASS_ICMPV6;
	else
		class = CLASS_RAW;
	struct settings *s = get_settings();
	struct protocol_verdict *v = bpf_map_lookup_elem(&protocols, &class);
	if (!s || !v)
		return 0;
	if (s->exempt_tgid && sandbox_tgid(s) == s->exempt_tgid)
		return 1;
	struct operation what = {
		.op = OP_SOCKET,
		.family = family,
		.type = ctx->type,
		.protocol = ctx->protocol,
	};
	return judge(s, &what, v->action, v->rule, v->rule, s->protocol_allow_list);
}

// No GPL-only helper is used.
char LICENSE[] SEC("license") = "Apache-2.0";
