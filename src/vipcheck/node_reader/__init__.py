"""The node reader, `vipcheck-node`: the node script's files read on the node, over netlink
where netlink has them (cli says which file comes from where)."""
