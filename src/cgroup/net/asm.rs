//! The token-bucket program, assembled by hand: a tiny eBPF encoder (only
//! the instructions the program uses) and [`program`], the instruction
//! listing of the `cgroup_skb` policer that [`super`] loads.
//!
//! Invariant: the listing is fixed apart from the map's fd and the verdict
//! for a packet over budget; the golden test below pins every byte, so a
//! change to the program is a reviewed change to that listing.

use super::bucket::{BURST, DROPPED, LAST_NS, PASSED, RATE, TOKENS};

/// One 8-byte instruction: opcode, destination and source registers,
/// signed 16-bit offset, signed 32-bit immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// The instruction as the kernel reads it: code, then the registers
    /// (destination in the low nibble), offset and immediate little-endian.
    pub fn encode(self) -> u64 {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        u64::from_le_bytes(b)
    }
}

// Opcode parts (include/uapi/linux/bpf_common.h, bpf.h).
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;
const W: u8 = 0x00;
const DW: u8 = 0x18;
const IMM: u8 = 0x00;
const MEM: u8 = 0x60;
const ATOMIC: u8 = 0xc0;
const K: u8 = 0x00;
const X: u8 = 0x08;
const ADD: u8 = 0x00;
const SUB: u8 = 0x10;
const MUL: u8 = 0x20;
const DIV: u8 = 0x30;
const MOV: u8 = 0xb0;
const JEQ: u8 = 0x10;
const JNE: u8 = 0x50;
const JSLT: u8 = 0xc0;
const JSLE: u8 = 0xd0;
const JLE: u8 = 0xb0;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
/// Atomic operations: add, and compare-and-exchange (0xf0 | BPF_FETCH).
const ATOMIC_ADD: i32 = 0x00;
const ATOMIC_CMPXCHG: i32 = 0xf1;
/// ld_imm64 with this source register loads a map by its fd.
const PSEUDO_MAP_FD: u8 = 1;
/// Helper numbers.
const MAP_LOOKUP_ELEM: i32 = 1;
const KTIME_GET_NS: i32 = 5;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
const R10: u8 = 10;

const NS_PER_SEC: i32 = 1_000_000_000;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

/// A jump target, resolved once the listing is complete.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Have,
    Consume,
    Drop,
}

/// A listing with forward jumps to labels.
struct Asm {
    insns: Vec<Insn>,
    jumps: Vec<(usize, Label)>,
    labels: Vec<(Label, usize)>,
}

impl Asm {
    fn op(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }
    fn label(&mut self, l: Label) -> &mut Self {
        self.labels.push((l, self.insns.len()));
        self
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) -> &mut Self {
        self.jumps.push((self.insns.len(), to));
        self.op(insn(JMP | code, dst, src, 0, imm))
    }
    /// Jumps over the next instruction.
    fn skip(&mut self, code: u8, dst: u8, src: u8, imm: i32) -> &mut Self {
        self.op(insn(JMP | code, dst, src, 1, imm))
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, to) in &self.jumps {
            let target = self
                .labels
                .iter()
                .find(|(l, _)| l == to)
                .map_or(self.insns.len(), |(_, i)| *i);
            self.insns[*at].off = (target - at - 1) as i16;
        }
        self.insns
    }
}

fn ldx(size: u8, dst: u8, src: u8, off: i16) -> Insn {
    insn(LDX | MEM | size, dst, src, off, 0)
}
fn mov(dst: u8, src: u8) -> Insn {
    insn(ALU64 | MOV | X, dst, src, 0, 0)
}
fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(ALU64 | MOV | K, dst, 0, 0, imm)
}
fn atomic(op: i32, dst: u8, off: i16, src: u8) -> Insn {
    insn(STX | ATOMIC | DW, dst, src, off, op)
}
fn call(helper: i32) -> Insn {
    insn(JMP | CALL, 0, 0, 0, helper)
}
fn exit() -> Insn {
    insn(JMP | EXIT, 0, 0, 0, 0)
}

/// The policer for one direction. Per packet (`len` = the skb's length):
///
/// 1. refill: `add = min(now - last, 1s) * rate / 1s`; when `add` is at
///    least one byte, the CPU whose compare-and-exchange moves `last` from
///    the value it read to `now` wins the interval and adds
///    `min(add, burst - tokens)` to `tokens` atomically. A CPU that loses
///    adds nothing: every nanosecond is credited once.
/// 2. consume: when `tokens >= len`, `tokens -= len` and `passed += len`
///    atomically, verdict 1 (pass); otherwise `dropped += len` and
///    `over_budget` (2 on egress: drop and tell TCP to back off; 0 on
///    ingress: drop).
///
/// Two CPUs that both see enough tokens both take them, so `tokens` can go
/// below zero by a packet per racing CPU; the debt is repaid by later
/// refills, so the long-run rate holds.
pub fn program(map_fd: i32, over_budget: i32) -> Vec<Insn> {
    let mut a = Asm {
        insns: Vec::new(),
        jumps: Vec::new(),
        labels: Vec::new(),
    };
    // r6 = skb->len; key 0 on the stack; r0 = &bucket.
    a.op(ldx(W, R6, R1, 0))
        .op(insn(ST | MEM | W, R10, 0, -4, 0))
        .op(insn(LD | IMM | DW, R1, PSEUDO_MAP_FD, 0, map_fd))
        .op(insn(0, 0, 0, 0, 0))
        .op(mov(R2, R10))
        .op(insn(ALU64 | ADD | K, R2, 0, 0, -4))
        .op(call(MAP_LOOKUP_ELEM))
        .jump(JNE | K, R0, 0, 0, Label::Have)
        // An array map always has its entry; the verifier wants the check.
        .op(mov_imm(R0, 1))
        .op(exit());
    // Refill. r7 = bucket, r8 = now, r2 = last, r3 = elapsed, r4 = add.
    a.label(Label::Have)
        .op(mov(R7, R0))
        .op(call(KTIME_GET_NS))
        .op(mov(R8, R0))
        .op(ldx(DW, R2, R7, LAST_NS))
        .op(mov(R3, R8))
        .op(insn(ALU64 | SUB | X, R3, R2, 0, 0))
        .jump(JSLE | K, R3, 0, 0, Label::Consume)
        .skip(JLE | K, R3, 0, NS_PER_SEC)
        .op(mov_imm(R3, NS_PER_SEC))
        .op(ldx(DW, R4, R7, RATE))
        .op(insn(ALU64 | MUL | X, R4, R3, 0, 0))
        .op(insn(ALU64 | DIV | K, R4, 0, 0, NS_PER_SEC))
        // Less than a byte: leave `last` so the time counts later.
        .jump(JEQ | K, R4, 0, 0, Label::Consume)
        .op(mov(R0, R2))
        .op(atomic(ATOMIC_CMPXCHG, R7, LAST_NS, R8))
        .jump(JNE | X, R0, R2, 0, Label::Consume)
        .op(ldx(DW, R5, R7, BURST))
        .op(ldx(DW, R9, R7, TOKENS))
        .op(insn(ALU64 | SUB | X, R5, R9, 0, 0))
        .skip(JSLE | X, R4, R5, 0)
        .op(mov(R4, R5))
        .jump(JSLE | K, R4, 0, 0, Label::Consume)
        .op(atomic(ATOMIC_ADD, R7, TOKENS, R4));
    // Consume.
    a.label(Label::Consume)
        .op(ldx(DW, R9, R7, TOKENS))
        .jump(JSLT | X, R9, R6, 0, Label::Drop)
        .op(mov_imm(R5, 0))
        .op(insn(ALU64 | SUB | X, R5, R6, 0, 0))
        .op(atomic(ATOMIC_ADD, R7, TOKENS, R5))
        .op(atomic(ATOMIC_ADD, R7, PASSED, R6))
        .op(mov_imm(R0, 1))
        .op(exit());
    a.label(Label::Drop)
        .op(atomic(ATOMIC_ADD, R7, DROPPED, R6))
        .op(mov_imm(R0, over_budget))
        .op(exit());
    a.finish()
}

/// The listing as the kernel reads it.
pub fn encode(insns: &[Insn]) -> Vec<u64> {
    insns.iter().map(|i| i.encode()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_instructions_encode_as_the_kernel_documents() {
        // Encodings as in the kernel's instruction-set document and as
        // `llvm-objdump -d` prints them (bytes in memory order).
        let bytes = |i: Insn| i.encode().to_le_bytes();
        assert_eq!(bytes(exit()), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(mov_imm(R0, 1)), [0xb7, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(bytes(mov(R7, R0)), [0xbf, 0x07, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(ldx(W, R6, R1, 0)), [0x61, 0x16, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(ldx(DW, R2, R7, 24)), [0x79, 0x72, 24, 0, 0, 0, 0, 0]);
        assert_eq!(
            bytes(insn(ST | MEM | W, R10, 0, -4, 0)),
            [0x62, 0x0a, 0xfc, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(bytes(call(5)), [0x85, 0, 0, 0, 5, 0, 0, 0]);
        // lock *(u64 *)(r7 + 16) += r4
        assert_eq!(
            bytes(atomic(ATOMIC_ADD, R7, 16, R4)),
            [0xdb, 0x47, 16, 0, 0, 0, 0, 0]
        );
        // r0 = cmpxchg_64(r7 + 24, r0, r8)
        assert_eq!(
            bytes(atomic(ATOMIC_CMPXCHG, R7, 24, R8)),
            [0xdb, 0x87, 24, 0, 0xf1, 0, 0, 0]
        );
        // r4 /= 1000000000
        assert_eq!(
            bytes(insn(ALU64 | DIV | K, R4, 0, 0, NS_PER_SEC)),
            [0x37, 0x04, 0, 0, 0x00, 0xca, 0x9a, 0x3b]
        );
    }

    /// The reviewed listing, one instruction a line, with the map at fd 7
    /// and the egress verdict 2.
    const GOLDEN: &[(u64, &str)] = &[
        (
            0x0000_0000_0000_1661,
            "r6 = *(u32 *)(r1 + 0)          skb->len",
        ),
        (0x0000_0000_fffc_0a62, "*(u32 *)(r10 - 4) = 0          key"),
        (0x0000_0007_0000_1118, "r1 = map_fd(7) ll"),
        (0x0000_0000_0000_0000, "  (second half of ld_imm64)"),
        (0x0000_0000_0000_a2bf, "r2 = r10"),
        (0xffff_fffc_0000_0207, "r2 += -4"),
        (0x0000_0001_0000_0085, "call bpf_map_lookup_elem"),
        (
            0x0000_0000_0002_0055,
            "if r0 != 0 goto +2             -> have",
        ),
        (0x0000_0001_0000_00b7, "r0 = 1"),
        (0x0000_0000_0000_0095, "exit"),
        (0x0000_0000_0000_07bf, "have: r7 = r0"),
        (0x0000_0005_0000_0085, "call bpf_ktime_get_ns"),
        (0x0000_0000_0000_08bf, "r8 = r0                        now"),
        (0x0000_0000_0018_7279, "r2 = *(u64 *)(r7 + 24)         last"),
        (0x0000_0000_0000_83bf, "r3 = r8"),
        (
            0x0000_0000_0000_231f,
            "r3 -= r2                       elapsed",
        ),
        (
            0x0000_0000_0010_03d5,
            "if r3 s<= 0 goto +16           -> consume",
        ),
        (0x3b9a_ca00_0001_03b5, "if r3 <= 1000000000 goto +1"),
        (0x3b9a_ca00_0000_03b7, "r3 = 1000000000"),
        (0x0000_0000_0000_7479, "r4 = *(u64 *)(r7 + 0)          rate"),
        (0x0000_0000_0000_342f, "r4 *= r3"),
        (0x3b9a_ca00_0000_0437, "r4 /= 1000000000               add"),
        (
            0x0000_0000_000a_0415,
            "if r4 == 0 goto +10            -> consume",
        ),
        (0x0000_0000_0000_20bf, "r0 = r2"),
        (0x0000_00f1_0018_87db, "r0 = cmpxchg(r7 + 24, r0, r8)"),
        (
            0x0000_0000_0007_205d,
            "if r0 != r2 goto +7            -> consume",
        ),
        (
            0x0000_0000_0008_7579,
            "r5 = *(u64 *)(r7 + 8)          burst",
        ),
        (
            0x0000_0000_0010_7979,
            "r9 = *(u64 *)(r7 + 16)         tokens",
        ),
        (0x0000_0000_0000_951f, "r5 -= r9                       room"),
        (0x0000_0000_0001_54dd, "if r4 s<= r5 goto +1"),
        (0x0000_0000_0000_54bf, "r4 = r5"),
        (
            0x0000_0000_0001_04d5,
            "if r4 s<= 0 goto +1            -> consume",
        ),
        (0x0000_0000_0010_47db, "lock *(u64 *)(r7 + 16) += r4"),
        (0x0000_0000_0010_7979, "consume: r9 = *(u64 *)(r7 + 16)"),
        (
            0x0000_0000_0006_69cd,
            "if r9 s< r6 goto +6            -> drop",
        ),
        (0x0000_0000_0000_05b7, "r5 = 0"),
        (0x0000_0000_0000_651f, "r5 -= r6"),
        (0x0000_0000_0010_57db, "lock *(u64 *)(r7 + 16) += r5   take"),
        (
            0x0000_0000_0020_67db,
            "lock *(u64 *)(r7 + 32) += r6   passed",
        ),
        (0x0000_0001_0000_00b7, "r0 = 1"),
        (0x0000_0000_0000_0095, "exit"),
        (0x0000_0000_0028_67db, "drop: lock *(u64 *)(r7 + 40) += r6"),
        (0x0000_0002_0000_00b7, "r0 = 2"),
        (0x0000_0000_0000_0095, "exit"),
    ];

    #[test]
    fn program_matches_the_reviewed_listing() {
        let got = encode(&program(7, 2));
        let want: Vec<u64> = GOLDEN.iter().map(|(w, _)| *w).collect();
        for (i, (g, (w, text))) in got.iter().zip(GOLDEN).enumerate() {
            assert_eq!(g, w, "instruction {i} ({text}): {g:#018x}, want {w:#018x}");
        }
        assert_eq!(got, want);
        // Ingress differs only in the verdict for a packet over budget.
        let ingress = encode(&program(7, 0));
        let differ: Vec<usize> = (0..got.len()).filter(|&i| got[i] != ingress[i]).collect();
        assert_eq!(differ, [got.len() - 2]);
        assert_eq!(ingress[got.len() - 2], 0x0000_0000_0000_00b7);
    }
}
