/* A little-endian u32 length that counts the whole message (header included), read with
 * bpf_skb_load_bytes straight into a host-order (little-endian) integer. */
#include "kcm_bpf.h"

SEC("socket_kcm")
int le_u32_parser(struct __sk_buff *skb)
{
	__u32 total;

	if (bpf_skb_load_bytes(skb, 0, &total, sizeof(total)))
		return 0;
	return total;
}

char _license[] SEC("license") = "GPL";
