//! The context a program sees: `struct __sk_buff`, of which kcm defines only `len`.
//!
//! A socket filter's context is the kernel's UAPI `struct __sk_buff` (192 bytes). In kcm the
//! "packet" is the message view (`design.md` §2, decision 1), so the only field with a meaning
//! is `len`, the number of bytes in the view. Reads of any other field are refused at load time
//! with the field's name, rather than answered with a made-up value.

/// Size of `struct __sk_buff` in bytes.
pub(crate) const SK_BUFF_SIZE: i64 = 192;

/// `(offset, size, name)` of every `struct __sk_buff` field, in UAPI order.
const FIELDS: &[(i64, i64, &str)] = &[
    (0, 4, "len"),
    (4, 4, "pkt_type"),
    (8, 4, "mark"),
    (12, 4, "queue_mapping"),
    (16, 4, "protocol"),
    (20, 4, "vlan_present"),
    (24, 4, "vlan_tci"),
    (28, 4, "vlan_proto"),
    (32, 4, "priority"),
    (36, 4, "ingress_ifindex"),
    (40, 4, "ifindex"),
    (44, 4, "tc_index"),
    (48, 20, "cb"),
    (68, 4, "hash"),
    (72, 4, "tc_classid"),
    (76, 4, "data"),
    (80, 4, "data_end"),
    (84, 4, "napi_id"),
    (88, 4, "family"),
    (92, 4, "remote_ip4"),
    (96, 4, "local_ip4"),
    (100, 16, "remote_ip6"),
    (116, 16, "local_ip6"),
    (132, 4, "remote_port"),
    (136, 4, "local_port"),
    (140, 4, "data_meta"),
    (144, 8, "flow_keys"),
    (152, 8, "tstamp"),
    (160, 4, "wire_len"),
    (164, 4, "gso_segs"),
    (168, 8, "sk"),
    (176, 4, "gso_size"),
    (180, 1, "tstamp_type"),
    (184, 8, "hwtstamp"),
];

/// The name of the field holding byte `off` of the context, for error messages.
pub(crate) fn field_name(off: i64) -> &'static str {
    if !(0..SK_BUFF_SIZE).contains(&off) {
        return "(outside struct __sk_buff)";
    }
    FIELDS
        .iter()
        .find(|(o, s, _)| (*o..o + s).contains(&off))
        .map_or("(padding)", |f| f.2)
}

/// A permitted context read: `dst = (len >> shift) & mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CtxRead {
    pub(crate) shift: u8,
    pub(crate) mask: u32,
}

/// Checks a read of `size` bytes at context offset `off`. Like the kernel, a narrower read of
/// `len` (1 or 2 bytes, aligned) is allowed and yields those bytes of the little-endian word.
pub(crate) fn read_access(off: i64, size: i64) -> Option<CtxRead> {
    let ok_size = matches!(size, 1 | 2 | 4);
    if !ok_size || off < 0 || off % size != 0 || off + size > 4 {
        return None;
    }
    Some(CtxRead {
        shift: (off * 8) as u8,
        mask: if size == 4 {
            u32::MAX
        } else {
            (1u32 << (size * 8)) - 1
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_contiguous_up_to_the_padding() {
        let mut end = 0;
        for (off, size, name) in FIELDS {
            assert!(*off >= end, "{name} overlaps");
            end = off + size;
        }
        assert_eq!(end, SK_BUFF_SIZE);
        assert_eq!(field_name(4), "pkt_type");
        assert_eq!(field_name(52), "cb");
        assert_eq!(field_name(181), "(padding)");
        assert_eq!(field_name(-4), "(outside struct __sk_buff)");
    }

    #[test]
    fn only_len_is_readable() {
        assert_eq!(
            read_access(0, 4),
            Some(CtxRead {
                shift: 0,
                mask: u32::MAX
            })
        );
        assert_eq!(
            read_access(2, 2),
            Some(CtxRead {
                shift: 16,
                mask: 0xffff
            })
        );
        assert_eq!(
            read_access(3, 1),
            Some(CtxRead {
                shift: 24,
                mask: 0xff
            })
        );
        assert_eq!(read_access(0, 8), None);
        assert_eq!(read_access(1, 2), None, "misaligned");
        assert_eq!(read_access(4, 4), None, "pkt_type");
    }
}
