# CPU accounting for the side-by-side benchmarks (sourced). On a shared 2-core machine the load generator
# and the server compete for the same cores, so a throughput ratio mixes the server's own cost with the
# client's; the CPU time per message tells the server's cost apart.
#
#   cpu_mark            remember the machine's busy time and this shell's children's time
#   cpu_server_us N     after a run of N messages (or RETRs) started after cpu_mark: the CPU time per item of
#                       everything but the load generator (the server's processes, its kernel work, disk
#                       and network interrupts, and whatever else ran: compare runs of one sitting)
#   cpu_client_us N     the load generator's own CPU time per item (the children this shell waited for)
# Busy time is user + nice + system + irq + softirq from /proc/stat (idle, iowait and steal left out).
cpu_busy_ticks() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
cpu_child_ticks() { awk '{ print $16 + $17 }' "/proc/$$/stat"; }
cpu_mark() {
	cpu_busy0=$(cpu_busy_ticks)
	cpu_child0=$(cpu_child_ticks)
}
cpu_server_us() {
	awk -v b="$(cpu_busy_ticks)" -v b0="$cpu_busy0" -v c="$(cpu_child_ticks)" -v c0="$cpu_child0" \
		-v hz="$(getconf CLK_TCK)" -v n="$1" 'BEGIN { if (n > 0) printf "%.0f", ((b - b0) - (c - c0)) * 1e6 / hz / n; else print "?" }'
}
cpu_client_us() {
	awk -v c="$(cpu_child_ticks)" -v c0="$cpu_child0" -v hz="$(getconf CLK_TCK)" -v n="$1" \
		'BEGIN { if (n > 0) printf "%.0f", (c - c0) * 1e6 / hz / n; else print "?" }'
}
