/* memcached binary protocol: 24-byte header, u32 big-endian total body length at byte 8. */
#include "kcm_bpf.h"

SEC("socket_kcm")
int memcache_parser(struct __sk_buff *skb)
{
	return load_word(skb, 8) + 24;
}

char _license[] SEC("license") = "GPL";
