// The dashboard: a small HTTP server in the CLI process showing the cluster live (hotpot dashboard).
export { Dashboard, isLoopback, startDashboard, type DashboardOptions } from './server.ts';
