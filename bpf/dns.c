/* DNS over TCP: u16 big-endian length of the message that follows. */
#include "kcm_bpf.h"

SEC("socket_kcm")
int dns_parser(struct __sk_buff *skb)
{
	return load_half(skb, 0) + 2;
}

char _license[] SEC("license") = "GPL";
