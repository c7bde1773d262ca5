$ours_none << EOD
1 403.0 1556
2 705.1 1588
4 833.8 3671
8 937.9 7256
16 859.0 16438
32 755.3 24940
EOD
$ours_uid << EOD
1 258.1 4208
2 720.5 2902
4 749.2 3934
8 775.1 7856
16 959.2 14597
32 834.1 31046
EOD
$ours_pid << EOD
1 336.0 3418
2 547.0 2124
4 680.5 4467
8 784.8 7700
16 834.5 16674
32 968.0 29126
EOD
$lttng_none << EOD
1 180.3 NaN
2 282.5 NaN
4 307.8 NaN
8 360.9 NaN
16 412.8 NaN
32 376.9 NaN
EOD
$lttng_uid << EOD
1 123.8 NaN
2 148.7 NaN
4 207.6 NaN
8 174.0 NaN
16 213.6 NaN
32 178.6 NaN
EOD
$lttng_pid << EOD
1 6.5 NaN
2 7.0 NaN
4 7.3 NaN
8 6.8 NaN
16 7.0 NaN
32 6.7 NaN
EOD
set terminal pngcairo size 1200,520 noenhanced
set output 'docs/churn.png'
set multiplot layout 1,2 title 'ustrace bench churn: short-lived apps, 2-core machine'
set logscale x 2
set xlabel 'PAR (apps launched at once)'
set key below
set grid
set ylabel 'apps/s'
set logscale y 10
plot $ours_none using 1:2 with linespoints lw 2 lc rgb '#555555' dt 1 pt 7 title 'ours none (200 apps)', $ours_uid using 1:2 with linespoints lw 2 lc rgb '#1f77b4' dt 1 pt 7 title 'ours uid (200 apps)', $ours_pid using 1:2 with linespoints lw 2 lc rgb '#d62728' dt 1 pt 7 title 'ours pid (200 apps)', $lttng_none using 1:2 with linespoints lw 2 lc rgb '#555555' dt 2 pt 6 title 'lttng none (200 apps)', $lttng_uid using 1:2 with linespoints lw 2 lc rgb '#1f77b4' dt 2 pt 6 title 'lttng uid (200 apps)', $lttng_pid using 1:2 with linespoints lw 2 lc rgb '#d62728' dt 2 pt 6 title 'lttng pid (40 apps)'
set ylabel 'p99 registration latency, app-measured (us)'
plot $ours_none using 1:3 with linespoints lw 2 lc rgb '#555555' dt 1 pt 7 title 'ours none (200 apps)', $ours_uid using 1:3 with linespoints lw 2 lc rgb '#1f77b4' dt 1 pt 7 title 'ours uid (200 apps)', $ours_pid using 1:3 with linespoints lw 2 lc rgb '#d62728' dt 1 pt 7 title 'ours pid (200 apps)'
unset multiplot
