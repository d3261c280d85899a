"""Business reports from CRM and finance data: load, compute, render, schedule."""
