// The network rule of a lab: its nodes connect only to the lab's own hosts. One check, used wherever a node is
// about to connect somewhere a DNS answer or a client named (an MX, an address literal, an MTA-STS policy host).

/** Whether `address` is one of the lab's (IPv4-mapped IPv6 counts as the IPv4 address); no list: any address. */
export function insideLab(address: string, labAddresses: readonly string[] | undefined): boolean {
  if (!labAddresses) return true;
  const plain = (a: string) => a.toLowerCase().replace(/^::ffff:(?=\d+\.)/, '');
  return labAddresses.some((a) => plain(a) === plain(address));
}
