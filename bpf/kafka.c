/* Kafka wire protocol: i32 big-endian size of the rest. The bytes are copied with
 * bpf_skb_load_bytes and assembled with shifts and ors. */
#include "kcm_bpf.h"

SEC("socket_kcm")
int kafka_parser(struct __sk_buff *skb)
{
	__u8 b[4];
	int size;

	if (bpf_skb_load_bytes(skb, 0, b, sizeof(b)) != 0)
		return 0;
	size = ((int)b[0] << 24) | ((int)b[1] << 16) | ((int)b[2] << 8) | (int)b[3];
	return size + 4;
}

char _license[] SEC("license") = "GPL";
