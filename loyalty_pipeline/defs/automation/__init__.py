"""When runs happen: partitions, jobs, the sensors, the schedule and how a run's days are planned."""
