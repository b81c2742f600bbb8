#!/usr/bin/env python3
"""Hash-tree roots of EIP-7916/7495 progressive SSZ values (Gloas uses them), computed by
remerkleable (pip install eth-remerkleable==0.1.31, the version eth-consensus-specs 1.7.0a13
pins). src/consensus/progressive.rs tests against these; run this to see where they come from."""
from remerkleable.basic import uint64
from remerkleable.byte_arrays import Bytes32, Bytes48, ByteVector

Bytes20 = ByteVector[20]
from remerkleable.progressive import ProgressiveList, ProgressiveBitlist, ProgressiveContainer


def show(name, value):
    print(f"{name} {value.hash_tree_root().hex()}")


show("progressive_list_u64_empty", ProgressiveList[uint64]())
for n in (1, 2, 5, 6, 21, 22, 29, 86):
    show(f"progressive_list_u64_1_to_{n}", ProgressiveList[uint64](*range(1, n + 1)))
for n in (0, 1, 2, 5, 21, 22):
    show(f"progressive_list_bytes32_{n}",
         ProgressiveList[Bytes32](*[Bytes32(bytes([i + 1]) * 32) for i in range(n)]))
for n in (0, 1, 8, 255, 256, 257, 2000):
    show(f"progressive_bitlist_alternating_{n}", ProgressiveBitlist(*[(i % 3) == 0 for i in range(n)]))


class Three(ProgressiveContainer(active_fields=[1, 1, 1])):
    a: uint64
    b: Bytes32
    c: ProgressiveList[uint64]


show("container_three_default", Three())
show("container_three_values", Three(a=7, b=Bytes32(b"\x09" * 32), c=ProgressiveList[uint64](1, 2, 3)))


class Hash32(Bytes32):
    pass


class KZGCommitment(Bytes48):
    pass


class ExecutionPayloadBid(ProgressiveContainer(active_fields=[1] * 12)):
    parent_block_hash: Bytes32
    parent_block_root: Bytes32
    block_hash: Bytes32
    prev_randao: Bytes32
    fee_recipient: Bytes20
    gas_limit: uint64
    builder_index: uint64
    slot: uint64
    value: uint64
    execution_payment: uint64
    blob_kzg_commitments: ProgressiveList[KZGCommitment]
    execution_requests_root: Bytes32


show("execution_payload_bid_default", ExecutionPayloadBid())
show("execution_payload_bid_values", ExecutionPayloadBid(
    slot=5, value=7, builder_index=3,
    blob_kzg_commitments=ProgressiveList[KZGCommitment](KZGCommitment(b"\x01" * 48))))
