"""SLA: clocks per ticket kept by the "sla" event consumer, timers fired by the scheduler, compliance queries."""
