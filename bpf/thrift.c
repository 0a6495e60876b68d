/* Thrift framed transport via bpf_skb_load_bytes: the length word is copied to the stack and
 * byte-swapped, the way programs that avoid the legacy LD_ABS loads write it. */
#include "kcm_bpf.h"

SEC("socket_kcm")
int thrift_parser(struct __sk_buff *skb)
{
	__u32 be_len;

	if (bpf_skb_load_bytes(skb, 0, &be_len, sizeof(be_len)) < 0)
		return 0; /* fewer than 4 bytes so far: need more */
	return __builtin_bswap32(be_len) + 4;
}

char _license[] SEC("license") = "GPL";
