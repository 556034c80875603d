module example.com/tasklet/agent

go 1.22
