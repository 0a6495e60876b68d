/* HTTP/2 frames: 24-bit big-endian payload length, 9-byte frame header. The u24 is assembled
 * from three byte loads. */
#include "kcm_bpf.h"

SEC("socket_kcm")
int http2_parser(struct __sk_buff *skb)
{
	__u32 len = (load_byte(skb, 0) << 16) | (load_byte(skb, 1) << 8) | load_byte(skb, 2);

	return len + 9;
}

char _license[] SEC("license") = "GPL";
