/* MQTT control packets: one type byte, then the "remaining length" as a 1-4 byte varint
 * (7 bits per byte, least significant first, high bit = more bytes follow). The loop is
 * unrolled, so the program has no back-edge. A fifth continuation byte is malformed. */
#include "kcm_bpf.h"

#define EBADMSG 74

SEC("socket_kcm")
int mqtt_parser(struct __sk_buff *skb)
{
	__u32 remaining = 0;
	int i;

#pragma clang loop unroll(full)
	for (i = 0; i < 4; i++) {
		__u32 b = load_byte(skb, 1 + i); /* past the end: the program returns 0 */

		remaining |= (b & 0x7f) << (7 * i);
		if (!(b & 0x80))
			return 1 + (i + 1) + remaining;
	}
	return -EBADMSG;
}

char _license[] SEC("license") = "GPL";
